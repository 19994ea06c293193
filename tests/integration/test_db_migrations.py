"""Migration runner edge cases, the migrated schema against sql/, and database URL resolution."""

from __future__ import annotations

import re
import shutil
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from variant_pipeline.config import SQL_DIR
from variant_pipeline.data.engine import (
    app_database_url,
    dagster_database_url,
    make_engine,
    normalize_database_url,
)
from variant_pipeline.data.migrations import (
    REWORDED,
    MigrationError,
    discover_migrations,
    migration_status,
    sync_stages,
    upgrade,
)


@pytest.fixture
def sql_copy(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(SQL_DIR, target)
    return target


def test_a_new_file_is_pending_then_applied_once(engine: Engine, sql_copy: Path) -> None:
    (sql_copy / "900_extra.sql").write_text("CREATE TABLE extra_things (id int PRIMARY KEY, note text DEFAULT '100%');\n")
    status = migration_status(engine, sql_copy)
    assert [m.path.name for m in status.pending] == ["900_extra.sql"]
    assert [m.path.name for m in upgrade(engine, sql_copy)] == ["900_extra.sql"]
    assert upgrade(engine, sql_copy) == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('extra_things') IS NOT NULL")).scalar_one()


def test_a_changed_applied_file_is_an_error(engine: Engine, sql_copy: Path) -> None:
    path = sql_copy / "001_schema.sql"
    path.write_text(path.read_text() + "\nCREATE TABLE added_after_release (id int);\n")
    assert migration_status(engine, sql_copy).changed == ["001_schema.sql"]
    with pytest.raises(MigrationError, match="changed after it was applied"):
        upgrade(engine, sql_copy)


def test_rewording_an_applied_files_comments_is_not_a_change(engine: Engine, sql_copy: Path) -> None:
    path = sql_copy / "001_schema.sql"
    text = path.read_text()
    path.write_text("-- a new first line\n" + text.replace("-- 001: the data model.", "--   001, the data model:") + "\n-- a last word\n")
    assert migration_status(engine, sql_copy).changed == []
    assert upgrade(engine, sql_copy) == []


def test_checksums_recorded_before_statement_checksums_still_match(engine: Engine, sql_copy: Path) -> None:
    """A database migrated when a checksum covered the whole file (comments included), and before
    001's comments were reworded, is up to date, and its records stay as they are (a host still on
    the earlier code checks them with its own checksums). A statement edit is still refused, and so
    is a checksum that is neither form."""
    files = {m.version: m for m in discover_migrations()}
    [old_001] = REWORDED["001"]
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE schema_migrations SET checksum = :c WHERE version = '001'"), {"c": old_001})
        conn.execute(sa.text("UPDATE schema_migrations SET checksum = :c WHERE version = '003'"),
                     {"c": files["003"].file_checksum})
    before = _recorded(engine)
    assert migration_status(engine).changed == []
    assert upgrade(engine) == []
    assert _recorded(engine) == before
    # 001's earlier text stands for its statements as they were, not for whatever they become.
    path = sql_copy / "001_schema.sql"
    path.write_text(path.read_text() + "\nCREATE TABLE added_after_release (id int);\n")
    assert migration_status(engine, sql_copy).changed == ["001_schema.sql"]
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE schema_migrations SET checksum = 'f00d' WHERE version = '002'"))
    with pytest.raises(MigrationError, match="002_events.sql changed after it was applied"):
        upgrade(engine)


def _recorded(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT version, checksum FROM schema_migrations")).all())


def test_010_renames_the_stored_font_size_keys_and_keeps_updated_at(engine: Engine) -> None:
    from tests.fixtures.db import create_job

    job = create_job(engine, variants=1)
    variant = str(job.variant_ids[0])
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO overlay_layouts (job_variants_id, job_id, x_ratio, y_ratio, width_ratio, height_ratio,
                                            layout, updated_at)
               VALUES (:v, :j, 0.1, 0.1, 0.5, 0.2, CAST(:layout AS jsonb), '2026-01-02T03:04:05Z')"""),
            {"v": variant, "j": str(job.job_id),
             "layout": '{"text": "t", "font_size": 31, "line_spacing": 6, "text_color": "#FFFFFF"}'})
        conn.execute(sa.text(
            """INSERT INTO evaluations (job_variants_id, job_id, evaluation_type, metrics, updated_at)
               VALUES (:v, :j, 'readability', CAST(:m AS jsonb), '2026-01-02T03:04:05Z')"""),
            {"v": variant, "j": str(job.job_id), "m": '{"contrast_ratio": 4.5, "text_size": 31.0}'})
    with engine.begin() as conn:
        conn.execution_options(no_parameters=True).exec_driver_sql((SQL_DIR / "010_font_vocabulary.sql").read_text())
    with engine.connect() as conn:
        layout, touched = conn.execute(sa.text("SELECT layout, updated_at FROM overlay_layouts")).one()
        metrics, evaluated = conn.execute(sa.text("SELECT metrics, updated_at FROM evaluations")).one()
        triggers = conn.execute(sa.text(
            """SELECT count(*) FROM pg_trigger WHERE tgname IN ('overlay_layouts_touch_updated_at',
                                                              'evaluations_touch_updated_at') AND tgenabled = 'O'""")).scalar_one()
    assert layout == {"text": "t", "font_size_px": 31, "line_spacing_px": 6, "text_color": "#FFFFFF"}
    assert metrics == {"contrast_ratio": 4.5, "font_size_px": 31.0}
    assert touched == evaluated == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert triggers == 2  # enabled again


def test_a_layout_written_with_the_keys_before_010_reads_with_todays(engine: Engine) -> None:
    """A host still on the code before 010 may write the old keys after the migration ran."""
    from tests.fixtures.db import create_job
    from variant_pipeline.data.stage_inputs import overlay_layout

    job = create_job(engine, variants=1)
    variant = str(job.variant_ids[0])
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO overlay_layouts (job_variants_id, job_id, x_ratio, y_ratio, width_ratio, height_ratio, layout)
               VALUES (:v, :j, 0.1, 0.1, 0.5, 0.2, '{"text": "t", "font_size": 31, "line_spacing": 6}')"""),
            {"v": variant, "j": str(job.job_id)})
    with engine.connect() as conn:
        row = overlay_layout(conn, variant)
    assert row is not None and row.layout == {"text": "t", "font_size_px": 31, "line_spacing_px": 6}


def test_a_failing_migration_applies_nothing_of_itself(engine: Engine, sql_copy: Path) -> None:
    (sql_copy / "900_broken.sql").write_text("CREATE TABLE half_done (id int);\nSELECT no_such_function();\n")
    with pytest.raises(sa.exc.ProgrammingError):
        upgrade(engine, sql_copy)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('half_done') IS NULL")).scalar_one()
    assert [m.path.name for m in migration_status(engine, sql_copy).pending] == ["900_broken.sql"]


def test_bad_file_names_are_refused(sql_copy: Path) -> None:
    (sql_copy / "extra.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="not NNN_name.sql"):
        discover_migrations(sql_copy)


def test_concurrent_upgrades_apply_each_file_once(engine: Engine, sql_copy: Path) -> None:
    (sql_copy / "900_extra.sql").write_text("CREATE TABLE extra_once (id int);\n")
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def upgrade_in_thread() -> None:
        own = make_engine(engine.url, pool=False)
        try:
            results.append([m.path.name for m in upgrade(own, sql_copy)])
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=upgrade_in_thread) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(results) == [[], [], [], ["900_extra.sql"]]


def test_stage_sync_follows_stages_py(engine: Engine) -> None:
    from variant_pipeline.stages import STAGES, Stage

    # A new stage at the end and a reordering are both applied in one sync, positions stay unique.
    extra = Stage("extra_stage", "job", None, "test only")
    reordered = (STAGES[1], STAGES[0], *STAGES[2:], extra)
    with engine.begin() as conn:
        assert sync_stages(conn, reordered) == 3
        rows = conn.execute(sa.text("SELECT name FROM pipeline_stages ORDER BY position")).scalars().all()
        assert rows == [s.name for s in reordered]
        conn.rollback()


def declared_columns(sql_dir: Path = SQL_DIR) -> dict[str, dict[str, bool]]:
    """Table -> {column: nullable} as the migration files declare them (CREATE TABLE, ADD COLUMN)."""
    tables: dict[str, dict[str, bool]] = {}
    table = None
    for path in sorted(sql_dir.glob("*.sql")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if start := re.match(r"(?:CREATE|ALTER) TABLE (\w+)", line):
                table = start.group(1)
                tables.setdefault(table, {})
            elif not line.startswith(" "):
                table = None  # a column line is indented exactly four spaces inside a table block
            elif table and (column := re.match(r" {4}(?:ADD COLUMN )?(\w+)\s", line)):
                name = column.group(1)
                if name in {"UNIQUE", "CHECK", "PRIMARY", "FOREIGN", "CONSTRAINT", "EXCLUDE", "ADD"}:
                    continue
                tables[table][name] = "NOT NULL" not in line and "PRIMARY KEY" not in line
    return tables


def test_the_database_has_the_columns_sql_declares(engine: Engine) -> None:
    declared = declared_columns()
    assert len(declared) >= 17  # the parser found the tables (it would compare nothing otherwise)
    with engine.connect() as conn:
        for table, columns in declared.items():
            rows = conn.execute(
                sa.text("SELECT column_name, is_nullable FROM information_schema.columns "
                        "WHERE table_schema = 'public' AND table_name = :t ORDER BY ordinal_position"),
                {"t": table},
            ).all()
            in_db = {r.column_name: r.is_nullable == "YES" for r in rows}
            assert columns == in_db, table
        public = set(conn.execute(sa.text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")).scalars())
    assert public - set(declared) == {"schema_migrations"}


def test_core_tables_round_trip_typed_values(engine: Engine) -> None:
    from tests.fixtures.db import create_job

    job = create_job(engine, variants=1)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM jobs_variants WHERE job_id = :j"), {"j": job.job_id}).one()
    assert isinstance(row.job_variants_id, uuid.UUID) and row.job_variants_id == job.variant_ids[0]


# --- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5432/d", "postgresql+psycopg2://u:p@h:5432/d"),
        ("postgres://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("  postgresql://u@/d?host=/tmp/x  ", "postgresql+psycopg2://u@/d?host=/tmp/x"),
    ],
)
def test_normalize_database_url(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


def test_app_and_dagster_urls_follow_the_environment(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url.replace("postgresql+psycopg2://", "postgresql://"))
    assert app_database_url() == db_url
    monkeypatch.setenv("DAGSTER_DATABASE_URL", "postgres://d@elsewhere/dag")
    assert dagster_database_url() == "postgresql+psycopg2://d@elsewhere/dag"


def test_dagster_database_is_created_on_the_same_server(pg_admin_url: str, db_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("DAGSTER_DATABASE_URL", raising=False)
    admin = make_engine(pg_admin_url, pool=False)
    with admin.connect() as conn:
        existed = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = 'dagster'")).first() is not None
    url = dagster_database_url()
    assert sa.make_url(url).database == "dagster"
    assert sa.make_url(url).query == sa.make_url(db_url).query  # same server (socket or host)
    engine = make_engine(url, pool=False)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "dagster"
    finally:
        engine.dispose()
        if not existed:  # leave a shared server (VP_TEST_DATABASE_URL) as we found it
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql('DROP DATABASE IF EXISTS "dagster" WITH (FORCE)')
        admin.dispose()
