"""The job rollup under a real race: the last variants finish in concurrent transactions.

The original trigger counted finished variants without locking the job, so two variants
committing together each saw the other as unfinished and the job never completed.
Here each thread uses its own connection; a barrier releases them into their UPDATEs together,
and the job must reach its rolled-up state exactly once, every time.
"""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.fixtures.db import create_job
from tests.fixtures.state import set_variant_state
from variant_pipeline.data.engine import make_engine
from variant_pipeline.stages import LAST_VARIANT_STAGE, VARIANT_STAGES

REPETITIONS = 60
PENULTIMATE_STAGE = VARIANT_STAGES[-2].name


def _finish_concurrently(engine: Engine, variant_ids: list[uuid.UUID], outcomes: list[str]) -> list[BaseException]:
    """Each variant moves to its outcome in its own transaction; all start together and commit at once."""
    barrier = threading.Barrier(len(variant_ids))
    errors: list[BaseException] = []

    def finish(variant_id: uuid.UUID, outcome: str) -> None:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))  # connection ready before the barrier
                barrier.wait(timeout=30)
                stage = LAST_VARIANT_STAGE if outcome == "done" else PENULTIMATE_STAGE
                set_variant_state(conn, variant_id, stage, outcome, error=None if outcome == "done" else "x")
                conn.commit()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=finish, args=pair) for pair in zip(variant_ids, outcomes, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


def _job_events(engine: Engine, job_id: uuid.UUID) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT new_step, new_status FROM pipeline_events WHERE job_id = :j AND kind = 'job' ORDER BY id"),
            {"j": str(job_id)},
        ).all()
    return [(r.new_step, r.new_status) for r in rows]


@pytest.mark.parametrize(
    ("outcomes", "final_status"),
    [
        (["done", "done"], "done"),
        (["done", "done", "done"], "done"),
        (["failed", "failed", "failed"], "failed"),
        (["failed", "done", "failed"], "done"),
    ],
    ids=["two-done", "three-done", "three-failed", "mixed"],
)
def test_concurrent_finishers_roll_the_job_up_exactly_once(
    engine: Engine, outcomes: list[str], final_status: str
) -> None:
    # Enough connections for every thread at once.
    engine = make_engine(engine.url, pool_size=len(outcomes) + 2)
    try:
        for _ in range(REPETITIONS):
            job = create_job(engine, variants=len(outcomes))
            # All variants are at their last stage (or just before it), running: the next write finishes each.
            with engine.begin() as conn:
                for v in job.variant_ids:
                    set_variant_state(conn, v, PENULTIMATE_STAGE, "running")
            errors = _finish_concurrently(engine, job.variant_ids, outcomes)
            assert errors == []

            with engine.connect() as conn:
                job_row = conn.execute(sa.text("SELECT current_step, status, finished_at FROM jobs WHERE job_id = :j"),
                                       {"j": str(job.job_id)}).one()
            assert (job_row.current_step, job_row.status) == (LAST_VARIANT_STAGE, final_status)
            # A failed job is finished; a done one goes on to its job-level stages.
            assert (job_row.finished_at is not None) == (final_status == "failed")
            finals = [e for e in _job_events(engine, job.job_id) if e == (LAST_VARIANT_STAGE, final_status)]
            assert len(finals) == 1, _job_events(engine, job.job_id)
    finally:
        engine.dispose()
