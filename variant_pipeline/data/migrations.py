"""Schema migrations: the numbered files in sql/, applied in order, each once, and the
``pipeline_stages`` table kept in step with stages.py."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from variant_pipeline import stages as stage_graph
from variant_pipeline.config import SQL_DIR
from variant_pipeline.data.engine import refuse_dagster_database_for_pipeline

# Key of the session advisory lock that serialises concurrent `db upgrade` runs.
_MIGRATION_LOCK_KEY = 0x7661726970  # "varip"
_MIGRATION_FILE_RE = re.compile(r"^(\d{3,})_([A-Za-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


# Checksums recorded before a migration's comments were reworded, by version: the whole-file
# checksum of the earlier text -> the statement checksum of that text. A database that applied
# the earlier text is up to date while the file's statements are still those (a later statement
# edit is refused as any other is). Until then a checksum covered the whole file, comments included.
REWORDED: dict[str, dict[str, str]] = {
    # 001 and 002 named sections of a document outside the repository; they say what it said now.
    "001": {"a05691e5d969d940aa254ad6a77b9db177826abf9b2f0e6f37b3c52d747e5469":
            "187009c7f26d940290c8ffdfb8290e938736f34ebb0f554aba58b097e04cd127"},
    "002": {"a7ffbfa3f1f793d486ec09ce7b4de80e9893f1f35a9cecfccdc78b31fae30334":
            "4a58164420570c5a59a24849e588adf3a843eb4d244e340fea16c66c5400d288"},
}


def statement_checksum(text: str) -> str:
    """sha256 of a migration's statements: its lines without the comment lines (``--`` first) and
    trailing blanks. Rewording a comment line is not a schema change; any other edit is (a comment
    after a statement on its line counts as part of it: telling it from ``--`` in a string would
    need a SQL lexer)."""
    lines = [line.rstrip() for line in text.splitlines() if not line.lstrip().startswith("--")]
    return hashlib.sha256("\n".join(line for line in lines if line).encode()).hexdigest()


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path
    checksum: str  # statement_checksum of the file
    file_checksum: str  # sha256 of the whole file: what a database recorded before statement checksums

    def recorded_as_applied(self, recorded: str) -> bool:
        """Whether a recorded checksum is this file's: its statements, the whole file (recorded
        before statement checksums), or the earlier text of a file whose comments were reworded."""
        return (recorded in (self.checksum, self.file_checksum)
                or REWORDED.get(self.version, {}).get(recorded) == self.checksum)

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
        data = path.read_bytes()
        migrations.append(Migration(version=version, name=name, path=path,
                                    checksum=statement_checksum(data.decode("utf-8")),
                                    file_checksum=hashlib.sha256(data).hexdigest()))
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
        if a.version in by_version and not by_version[a.version].recorded_as_applied(a.checksum)
    ]
    pending = [m for m in files if m.version not in applied_versions]
    return MigrationStatus(applied=applied, pending=pending, changed=changed)


def upgrade(engine: Engine, sql_dir: Path = SQL_DIR) -> list[Migration]:
    """Apply pending migrations in order (each in its own transaction), then sync pipeline_stages.

    Returns the migrations applied now (empty when up to date). A file whose statements changed
    after it was applied is an error: write a new migration instead. A file whose comment lines
    alone changed is not.
    """
    files = discover_migrations(sql_dir)
    applied_now: list[Migration] = []
    with engine.connect() as conn:
        # Session-level lock: two processes upgrading at once apply each file once.
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        conn.commit()
        try:
            with conn.begin():
                refuse_dagster_database_for_pipeline(conn)
                conn.exec_driver_sql(_CREATE_MIGRATIONS_TABLE)
            with conn.begin():
                applied = {a.version: a for a in _applied(conn)}
            for migration in files:
                done = applied.get(migration.version)
                if done is not None:
                    if not migration.recorded_as_applied(done.checksum):
                        raise MigrationError(
                            f"migration {migration.path.name} changed after it was applied "
                            f"(recorded checksum {done.checksum[:12]}, file {migration.checksum[:12]}); "
                            "add a new migration file instead of editing an applied one"
                        )
                    # An older checksum form stays as recorded: a host still on the earlier code
                    # checks the same records with its own (whole-file) checksums.
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

