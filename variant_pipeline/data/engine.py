"""Where the database is, and engines on it.

Where: ``DATABASE_URL`` when set (``postgres://`` and ``postgresql://`` are normalised to
``postgresql+psycopg2://``, because SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3),
otherwise the embedded server under ``$VARIANT_PIPELINE_HOME/pgdata`` (see embedded_pg.py),
started on demand, with the databases ``variant_pipeline`` (ours) and ``dagster`` (Dagster's).

Writers of pipeline state use ``transaction(engine, origin=...)`` so the outbox events that the
triggers write record who made the change.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from threading import Lock
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from variant_pipeline.config import SettingsError

# The only names of SQLAlchemy the rest of the package uses: the engine and connection types it is
# handed, and the errors it tells apart. No module outside ``data`` imports SQLAlchemy itself.
ConnectionLost = (sa.exc.OperationalError, sa.exc.InterfaceError)  # the server or the session went away
SchemaMissing = sa.exc.ProgrammingError  # a table or a function is not there: the schema is not applied

APP_DATABASE = "variant_pipeline"
DAGSTER_DATABASE = "dagster"
ORIGIN_SETTING = "variant_pipeline.origin"


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
    from variant_pipeline.data.embedded_pg import ensure_embedded_server

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
        app_url = _env_url("DATABASE_URL")
        if app_url is not None and same_database(url, app_url):
            raise SharedDatabaseError(
                "DAGSTER_DATABASE_URL names the pipeline's own database: Dagster's tables (its `jobs` among "
                "them) would clash with the pipeline's; give Dagster a database of its own, or unset "
                "DAGSTER_DATABASE_URL for a database `dagster` on the same server")
        return url
    app_url = _env_url("DATABASE_URL")
    if app_url is None:
        from variant_pipeline.data.embedded_pg import ensure_embedded_server

        admin = ensure_embedded_server()
    else:
        admin = app_url
    ensure_database(admin, DAGSTER_DATABASE)
    return with_database(admin, DAGSTER_DATABASE)


class SharedDatabaseError(SettingsError):
    """Dagster's storage and the pipeline's tables pointed at one database."""


def same_database(a: str, b: str) -> bool:
    """Whether two URLs name one database (same host, port and database; user and driver aside)."""
    def where(url: str) -> tuple[str, int, str | None]:
        parsed = make_url(normalize_database_url(url))
        host = parsed.host or str(parsed.query.get("host") or "")  # a Unix socket comes as ?host=
        return host, parsed.port or 5432, parsed.database

    return where(a) == where(b)


# A table only the pipeline's schema has, and one only Dagster's has.
PIPELINE_MARKER_TABLE = "jobs_variants"
DAGSTER_MARKER_TABLE = "event_logs"


def refuse_pipeline_database_for_dagster(conn: Connection) -> None:
    """Dagster's storage must not share the pipeline's database: both have a table ``jobs``."""
    _refuse_if_table(conn, PIPELINE_MARKER_TABLE, "Dagster's storage URL names the pipeline's own database",
                     "Dagster's tables (its `jobs` among them) would clash with the pipeline's; give Dagster a "
                     "database of its own (`variant-pipeline db url --dagster`)")


def refuse_dagster_database_for_pipeline(conn: Connection) -> None:
    """The pipeline's schema must not go into Dagster's storage database, for the same reason."""
    _refuse_if_table(conn, DAGSTER_MARKER_TABLE, "DATABASE_URL names a database that holds Dagster's storage",
                     "the pipeline's tables (its `jobs` among them) would clash with Dagster's; give the "
                     "pipeline a database of its own")


def _refuse_if_table(conn: Connection, table: str, what: str, why: str) -> None:
    if conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar_one():
        raise SharedDatabaseError(f"{what} (it has the table {table}): {why}")


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
            set_origin(conn, origin)
        yield conn


def set_origin(conn: Connection, origin: str) -> None:
    """Name who makes this transaction's changes, for the outbox events its triggers write."""
    # set_config(..., true) is SET LOCAL: it ends with this transaction.
    conn.execute(sa.text("SELECT set_config(:name, :origin, true)"), {"name": ORIGIN_SETTING, "origin": origin})

