"""PostgreSQL access: where the database is, engines, migrations, and the pipeline-state writes.

Where: ``DATABASE_URL`` when set (``postgres://`` and ``postgresql://`` are normalised to
``postgresql+psycopg2://``, because SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3),
otherwise the embedded server under ``$VARIANT_PIPELINE_HOME/pgdata`` (see embedded_pg.py),
started on demand, with the databases ``variant_pipeline`` (ours) and ``dagster`` (Dagster's).

Writers of pipeline state use ``transaction(engine, origin=...)`` so the outbox events that the
triggers write record who made the change.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from threading import Lock
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from variant_pipeline import stages as stage_graph
from variant_pipeline.config import SQL_DIR
from variant_pipeline.validation import (
    DEFAULT_VARIANTS,
    MAX_AD_COPY_EN_CHARS,
    MAX_AD_COPY_KOR_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_PROMPT_CHARS,
    MAX_TENANT_NAME_CHARS,
    InputError,
    check_image_file,
    check_tenant_id,
    check_text,
    check_variant_count,
    parse_uuid,
)

APP_DATABASE = "variant_pipeline"
DAGSTER_DATABASE = "dagster"
ORIGIN_SETTING = "variant_pipeline.origin"
# Key of the session advisory lock that serialises concurrent `db upgrade` runs.
_MIGRATION_LOCK_KEY = 0x7661726970  # "varip"
_MIGRATION_FILE_RE = re.compile(r"^(\d{3,})_([A-Za-z0-9_]+)\.sql$")


class UnknownTenantError(InputError):
    pass


class JobNotFoundError(InputError):
    pass


class MigrationError(RuntimeError):
    pass


# --- Where the database is ------------------------------------------------------------------


def normalize_database_url(url: str) -> str:
    """Use the psycopg2 driver for plain PostgreSQL URLs; leave an explicit driver alone."""
    url = url.strip()
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a malformed URL is shown as it is (it has no usable password anyway)
        return url


def _env_url(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return normalize_database_url(value) if value else None


def uses_embedded_server() -> bool:
    return _env_url("DATABASE_URL") is None


def app_database_url() -> str:
    """URL of the application database; starts the embedded server and creates the database if needed."""
    url = _env_url("DATABASE_URL")
    if url is not None:
        return url
    from variant_pipeline.embedded_pg import ensure_embedded_server

    admin = ensure_embedded_server()
    ensure_database(admin, APP_DATABASE)
    return with_database(admin, APP_DATABASE)


def dagster_database_url() -> str:
    """URL of Dagster's own storage database (runs, event logs, schedules).

    ``DAGSTER_DATABASE_URL`` when set; else a database ``dagster`` on the same server as the
    application database (created if missing).
    """
    url = _env_url("DAGSTER_DATABASE_URL")
    if url is not None:
        return url
    app_url = _env_url("DATABASE_URL")
    if app_url is None:
        from variant_pipeline.embedded_pg import ensure_embedded_server

        admin = ensure_embedded_server()
    else:
        admin = app_url
    ensure_database(admin, DAGSTER_DATABASE)
    return with_database(admin, DAGSTER_DATABASE)


def ensure_database(admin_url: str, name: str) -> bool:
    """Create database ``name`` on the server of ``admin_url`` if it is missing. True if created."""
    engine = make_engine(admin_url, pool=False)
    try:
        with engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if exists:
                return False
        # CREATE DATABASE cannot run inside a transaction block.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            try:
                conn.exec_driver_sql(f'CREATE DATABASE "{_safe_identifier(name)}"')
            except sa.exc.ProgrammingError as exc:
                if "already exists" in str(exc):  # created concurrently by another process
                    return False
                raise
        return True
    finally:
        engine.dispose()


def _safe_identifier(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise ValueError(f"unsafe database name {name!r}")
    return name


# --- Engines --------------------------------------------------------------------------------

_engines: dict[str, Engine] = {}
_engines_lock = Lock()


def make_engine(url: str | URL, *, pool: bool = True, **kwargs: Any) -> Engine:
    """A new engine. Connection attempts time out (an unreachable server fails fast and clearly)."""
    url_text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    connect_args = {"connect_timeout": 10, "application_name": "variant_pipeline"}
    connect_args.update(kwargs.pop("connect_args", {}))
    if not pool:
        kwargs["poolclass"] = sa.pool.NullPool
    else:
        kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(normalize_database_url(url_text), connect_args=connect_args, **kwargs)


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: the application database)."""
    url = normalize_database_url(url) if url else app_database_url()
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        return engine


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def transaction(engine: Engine, origin: str | None = None) -> Iterator[Connection]:
    """One transaction; ``origin`` is recorded on every outbox event it causes (else 'external')."""
    with engine.begin() as conn:
        if origin:
            # set_config(..., true) is SET LOCAL: it ends with this transaction.
            conn.execute(sa.text("SELECT set_config(:name, :origin, true)"), {"name": ORIGIN_SETTING, "origin": origin})
        yield conn


# --- Migrations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path
    checksum: str

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class AppliedMigration:
    version: str
    name: str
    checksum: str
    applied_at: datetime


@dataclass(frozen=True)
class MigrationStatus:
    applied: list[AppliedMigration]
    pending: list[Migration]
    changed: list[str] = field(default_factory=list)  # applied files whose content changed since


def discover_migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    migrations: list[Migration] = []
    seen: dict[str, Path] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        match = _MIGRATION_FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"migration file name {path.name!r} is not NNN_name.sql")
        version, name = match.groups()
        if version in seen:
            raise MigrationError(f"two migrations with version {version}: {seen[version].name}, {path.name}")
        seen[version] = path
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        migrations.append(Migration(version=version, name=name, path=path, checksum=checksum))
    return migrations


_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def _applied(conn: Connection) -> list[AppliedMigration]:
    exists = conn.execute(sa.text("SELECT to_regclass('schema_migrations') IS NOT NULL")).scalar_one()
    if not exists:
        return []
    rows = conn.execute(
        sa.text("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")
    ).all()
    return [AppliedMigration(*row) for row in rows]


def migration_status(engine: Engine, sql_dir: Path = SQL_DIR) -> MigrationStatus:
    files = discover_migrations(sql_dir)
    with engine.connect() as conn:
        applied = _applied(conn)
    by_version = {m.version: m for m in files}
    applied_versions = {a.version for a in applied}
    changed = [
        by_version[a.version].path.name
        for a in applied
        if a.version in by_version and by_version[a.version].checksum != a.checksum
    ]
    pending = [m for m in files if m.version not in applied_versions]
    return MigrationStatus(applied=applied, pending=pending, changed=changed)


def upgrade(engine: Engine, sql_dir: Path = SQL_DIR) -> list[Migration]:
    """Apply pending migrations in order (each in its own transaction), then sync pipeline_stages.

    Returns the migrations applied now (empty when up to date). A file changed after it was
    applied is an error: write a new migration instead.
    """
    files = discover_migrations(sql_dir)
    applied_now: list[Migration] = []
    with engine.connect() as conn:
        # Session-level lock: two processes upgrading at once apply each file once.
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        conn.commit()
        try:
            with conn.begin():
                conn.exec_driver_sql(_CREATE_MIGRATIONS_TABLE)
            with conn.begin():
                applied = {a.version: a for a in _applied(conn)}
            for migration in files:
                done = applied.get(migration.version)
                if done is not None:
                    if done.checksum != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.path.name} changed after it was applied "
                            f"(recorded checksum {done.checksum[:12]}, file {migration.checksum[:12]}); "
                            "add a new migration file instead of editing an applied one"
                        )
                    continue
                with conn.begin():
                    # no_parameters: the file goes to the server as it is ('%' is not a placeholder).
                    conn.execution_options(no_parameters=True).exec_driver_sql(migration.sql)
                    conn.execute(
                        sa.text("INSERT INTO schema_migrations (version, name, checksum) VALUES (:v, :n, :c)"),
                        {"v": migration.version, "n": migration.name, "c": migration.checksum},
                    )
                applied_now.append(migration)
            with conn.begin():
                sync_stages(conn)
        finally:
            conn.rollback()
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            conn.commit()
    return applied_now


def sync_stages(conn: Connection, stage_list: Sequence[stage_graph.Stage] = stage_graph.STAGES) -> int:
    """Make pipeline_stages match stages.py. Returns the number of rows inserted, changed or removed."""
    changed = 0
    for position, stage in enumerate(stage_list):
        result = conn.execute(
            sa.text(
                """
                INSERT INTO pipeline_stages (name, position, level) VALUES (:name, :position, :level)
                ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, level = EXCLUDED.level
                WHERE (pipeline_stages.position, pipeline_stages.level)
                      IS DISTINCT FROM (EXCLUDED.position, EXCLUDED.level)
                """
            ),
            {"name": stage.name, "position": position, "level": stage.level},
        )
        changed += result.rowcount
    names = [s.name for s in stage_list]
    removed = conn.execute(sa.text("DELETE FROM pipeline_stages WHERE NOT (name = ANY(:names))"), {"names": names})
    return changed + removed.rowcount


# --- Tenants and submission -----------------------------------------------------------------


def add_tenant(engine: Engine, tenant_id: str, display_name: str | None = None) -> bool:
    """Create a tenant if missing (idempotent). True if it was created now."""
    check_tenant_id(tenant_id)
    display_name = check_text(display_name, "tenant name", MAX_TENANT_NAME_CHARS)
    with engine.begin() as conn:
        result = conn.execute(
            sa.text(
                "INSERT INTO tenants (tenant_id, display_name) VALUES (:t, :n) ON CONFLICT (tenant_id) DO NOTHING"
            ),
            {"t": tenant_id, "n": display_name},
        )
        return result.rowcount == 1


@dataclass(frozen=True)
class JobRequest:
    """A checked submission: build it with ``JobRequest.build`` (which validates every field)."""

    tenant_id: str
    description_kor: str
    ad_copy_eng: str | None = None
    ad_copy_kor: str | None = None
    prompt: str | None = None
    image_path: Path | None = None
    variants: int = DEFAULT_VARIANTS

    @classmethod
    def build(
        cls,
        *,
        tenant_id: str,
        description_kor: str | None,
        ad_copy_eng: str | None = None,
        ad_copy_kor: str | None = None,
        prompt: str | None = None,
        image_path: Path | str | None = None,
        variants: int = DEFAULT_VARIANTS,
    ) -> JobRequest:
        check_tenant_id(tenant_id)
        desc = check_text(description_kor, "description", MAX_DESCRIPTION_CHARS, required=True)
        assert desc is not None
        path = Path(image_path).expanduser().resolve() if image_path is not None else None
        if path is not None:
            check_image_file(path)
        return cls(
            tenant_id=tenant_id,
            description_kor=desc,
            ad_copy_eng=check_text(ad_copy_eng, "English ad copy", MAX_AD_COPY_EN_CHARS),
            ad_copy_kor=check_text(ad_copy_kor, "Korean ad copy", MAX_AD_COPY_KOR_CHARS),
            prompt=check_text(prompt, "prompt", MAX_PROMPT_CHARS),
            image_path=path,
            variants=check_variant_count(variants),
        )


@dataclass(frozen=True)
class SubmittedJob:
    job_id: uuid.UUID
    variant_ids: list[uuid.UUID]
    product_image_asset_id: uuid.UUID | None


def submit_job(engine: Engine, request: JobRequest, store: Any | None = None, origin: str = "cli:submit") -> SubmittedJob:
    """Insert the job, its inputs and its variants in one transaction.

    ``store`` (an ``AssetStore``) receives the product photo; it is required when the request
    has one. If the transaction fails, the saved photo is removed again.
    """
    from PIL import Image

    stored = None
    if request.image_path is not None:
        if store is None:
            raise ValueError("an AssetStore is needed to submit a product image")
        check_image_file(request.image_path)  # again: the file may have changed since build()
        with Image.open(request.image_path) as img:
            img.load()
            stored = store.save_image(request.tenant_id, "product", img, fmt="PNG")
    try:
        with transaction(engine, origin) as conn:
            # Lock the tenant row so it cannot vanish mid-submission.
            tenant = conn.execute(
                sa.text("SELECT 1 FROM tenants WHERE tenant_id = :t FOR KEY SHARE"), {"t": request.tenant_id}
            ).first()
            if tenant is None:
                raise UnknownTenantError(
                    f"unknown tenant {request.tenant_id!r}; add it first with: "
                    f"variant-pipeline tenant add {request.tenant_id}"
                )
            job_id = conn.execute(
                sa.text(
                    """
                    INSERT INTO jobs (tenant_id, current_step, status, expected_variants)
                    VALUES (:t, :step, 'queued', :n) RETURNING job_id
                    """
                ),
                {"t": request.tenant_id, "step": stage_graph.FIRST_VARIANT_STAGE, "n": request.variants},
            ).scalar_one()
            job_id = _as_uuid(job_id)
            asset_id = None
            if stored is not None:
                asset_id = conn.execute(
                    sa.text(
                        """
                        INSERT INTO image_assets (tenant_id, job_id, image_type, path, width, height, sha256)
                        VALUES (:t, :j, 'product', :p, :w, :h, :s) RETURNING image_asset_id
                        """
                    ),
                    {"t": request.tenant_id, "j": str(job_id), "p": stored.relative_path,
                     "w": stored.width, "h": stored.height, "s": stored.sha256},
                ).scalar_one()
                asset_id = _as_uuid(asset_id)
            conn.execute(
                sa.text(
                    """
                    INSERT INTO job_inputs (job_id, desc_kor, ad_copy_eng, ad_copy_kor, prompt, product_image_asset_id)
                    VALUES (:j, :d, :ae, :ak, :p, :a)
                    """
                ),
                {"j": str(job_id), "d": request.description_kor, "ae": request.ad_copy_eng,
                 "ak": request.ad_copy_kor, "p": request.prompt, "a": str(asset_id) if asset_id else None},
            )
            variant_ids = conn.execute(
                sa.text(
                    """
                    INSERT INTO jobs_variants (job_id, creation_order, current_step, status)
                    SELECT :j, n, :step, 'queued' FROM generate_series(1, :count) AS n
                    RETURNING job_variants_id, creation_order
                    """
                ),
                {"j": str(job_id), "step": stage_graph.FIRST_VARIANT_STAGE, "count": request.variants},
            ).all()
    except BaseException:
        if stored is not None:
            store.delete(stored.relative_path)
        raise
    ordered = [_as_uuid(row[0]) for row in sorted(variant_ids, key=lambda r: r[1])]
    return SubmittedJob(job_id=job_id, variant_ids=ordered, product_image_asset_id=asset_id)


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


# --- State writes ---------------------------------------------------------------------------


def _check_state(step: str, status: str, level: str) -> None:
    if stage_graph.stage(step).level != level:
        raise ValueError(f"{step!r} is not a {level}-level stage")
    if status not in stage_graph.STATUSES:
        raise ValueError(f"unknown status {status!r}; known: {', '.join(stage_graph.STATUSES)}")


def set_variant_state(
    conn: Connection,
    job_variants_id: uuid.UUID | str,
    step: str,
    status: str,
    *,
    error: str | None = None,
    expected: tuple[str, str] | None = None,
) -> bool:
    """Move a variant to (step, status). With ``expected=(step, status)``, only from that state
    (compare-and-set: a claim that lost a race returns False and changes nothing)."""
    _check_state(step, status, "variant")
    return _set_state(conn, "jobs_variants", "job_variants_id", job_variants_id, step, status, error, expected)


def set_job_state(
    conn: Connection,
    job_id: uuid.UUID | str,
    step: str,
    status: str,
    *,
    error: str | None = None,
    expected: tuple[str, str] | None = None,
) -> bool:
    """Move a job to (step, status); see ``set_variant_state`` for ``expected``."""
    if status not in stage_graph.STATUSES:
        raise ValueError(f"unknown status {status!r}")
    stage_graph.stage(step)
    return _set_state(conn, "jobs", "job_id", job_id, step, status, error, expected)


def _set_state(
    conn: Connection,
    table: str,
    key: str,
    row_id: uuid.UUID | str,
    step: str,
    status: str,
    error: str | None,
    expected: tuple[str, str] | None,
) -> bool:
    params: dict[str, Any] = {"id": str(row_id), "step": step, "status": status, "error": error}
    condition = ""
    if expected is not None:
        condition = " AND current_step = :expected_step AND status = :expected_status"
        params.update(expected_step=expected[0], expected_status=expected[1])
    result = conn.execute(
        sa.text(f"UPDATE {table} SET current_step = :step, status = :status, error = :error WHERE {key} = :id{condition}"),
        params,
    )
    return result.rowcount == 1


# --- Status ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantStatus:
    job_variants_id: uuid.UUID
    creation_order: int
    step: str
    status: str
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class JobStatus:
    job_id: uuid.UUID
    tenant_id: str
    step: str
    status: str
    expected_variants: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    variants: list[VariantStatus]

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, uuid.UUID):
                return str(value)
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, list):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return plain(asdict(self))


def get_job_status(engine_or_conn: Engine | Connection, job_id: uuid.UUID | str) -> JobStatus:
    job_uuid = job_id if isinstance(job_id, uuid.UUID) else parse_uuid(job_id, "job id")
    with _connection(engine_or_conn) as conn:
        job = conn.execute(
            sa.text(
                """
                SELECT job_id, tenant_id, current_step, status, expected_variants, error,
                       created_at, updated_at, started_at, finished_at
                  FROM jobs WHERE job_id = :j
                """
            ),
            {"j": str(job_uuid)},
        ).first()
        if job is None:
            raise JobNotFoundError(f"no job with id {job_uuid}")
        variants = conn.execute(
            sa.text(
                """
                SELECT job_variants_id, creation_order, current_step, status, error,
                       created_at, updated_at, started_at, finished_at
                  FROM jobs_variants WHERE job_id = :j ORDER BY creation_order
                """
            ),
            {"j": str(job_uuid)},
        ).all()
    return JobStatus(
        _as_uuid(job[0]), *job[1:],
        variants=[VariantStatus(_as_uuid(v[0]), *v[1:]) for v in variants],
    )


@contextmanager
def _connection(engine_or_conn: Engine | Connection) -> Iterator[Connection]:
    if isinstance(engine_or_conn, Connection):
        yield engine_or_conn
    else:
        with engine_or_conn.connect() as conn:
            yield conn
