"""Migrations: ordered files, tracked, idempotent, stage table synced from stages.py."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from variant_pipeline.data.migrations import discover_migrations, migration_status, upgrade
from variant_pipeline.stages import STAGES


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
