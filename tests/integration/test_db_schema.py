"""Migrations: ordered files, tracked, idempotent, stage table synced from stages.py."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from variant_pipeline.data.migrations import discover_migrations, migration_status, upgrade
from variant_pipeline.stages import STAGES, Level, Outcome, Status


def test_template_has_all_migrations_and_stages(engine: Engine) -> None:
    status = migration_status(engine)
    assert status.pending == []
    assert [a.version for a in status.applied] == [m.version for m in discover_migrations()]
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, position, level FROM pipeline_stages ORDER BY position")).all()
    assert [(r.name, r.level) for r in rows] == [(s.name, s.level) for s in STAGES]


def test_upgrade_twice_changes_nothing(engine: Engine) -> None:
    def snapshot() -> tuple:
        with engine.connect() as conn:
            migrations = conn.execute(sa.text("SELECT version, checksum, applied_at FROM schema_migrations")).all()
            stage_rows = conn.execute(sa.text("SELECT name, position, level, xmin::text FROM pipeline_stages")).all()
            objects = conn.execute(
                sa.text("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")
            ).scalar_one()
        return sorted(migrations), sorted(stage_rows), objects

    before = snapshot()
    assert upgrade(engine) == []
    assert upgrade(engine) == []
    # Same rows, same row versions (xmin): the stage sync did not even rewrite unchanged rows.
    assert snapshot() == before


def _check_lists(engine: Engine, column: str) -> dict[str, set[str]]:
    """``{table: allowed values}`` of every CHECK constraint that lists the values of ``column``."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            """SELECT c.conrelid::regclass::text AS tbl, pg_get_constraintdef(c.oid) AS definition
                 FROM pg_constraint c
                WHERE c.contype = 'c' AND c.connamespace = 'public'::regnamespace
                  AND pg_get_constraintdef(c.oid) ~ ('^CHECK \\(\\(' || :col || ' = ANY')"""), {"col": column}).all()
    return {r.tbl: set(re.findall(r"'(\w+)'::text", r.definition)) for r in rows}


def test_the_schema_checks_the_values_the_code_declares(engine: Engine) -> None:
    """Status, Outcome and Level (stages.py) are the values the tables accept, and only those."""
    assert _check_lists(engine, "status") == {"jobs": set(Status), "jobs_variants": set(Status)}
    assert _check_lists(engine, "outcome") == {"stage_attempts": set(Outcome)}
    assert _check_lists(engine, "level") == {t: set(Level) for t in
                                             ("pipeline_stages", "stage_attempts", "failure_notices")}
    assert _check_lists(engine, "kind") == {"pipeline_events": set(Level)}
