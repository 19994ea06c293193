"""Triggers: outbox rows and NOTIFY for every state change, guards, timings, and the job rollup."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.fixtures.db import create_job
from tests.fixtures.state import set_job_state, set_variant_state
from variant_pipeline.data.engine import transaction
from variant_pipeline.data.outbox import JOB_CHANNEL, VARIANT_CHANNEL, NotifyListener, read_events_after
from variant_pipeline.stages import FIRST_JOB_STAGE, FIRST_VARIANT_STAGE, LAST_VARIANT_STAGE, VARIANT_STAGES


def events(engine: Engine, job_id: uuid.UUID) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT * FROM pipeline_events WHERE job_id = :j ORDER BY id"), {"j": str(job_id)}
        ).all()


def job_state(engine: Engine, job_id: uuid.UUID) -> tuple[str, str, str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT current_step, status, error FROM jobs WHERE job_id = :j"), {"j": str(job_id)}
        ).one()
    return row.current_step, row.status, row.error


def set_variant(engine: Engine, variant_id: uuid.UUID, stage: str, status: str, origin: str | None = None,
                error: str | None = None) -> None:
    with transaction(engine, origin) as conn:
        assert set_variant_state(conn, variant_id, stage, status, error=error)


def test_submit_writes_one_event_per_row_inserted(engine: Engine) -> None:
    job = create_job(engine, variants=3)
    rows = events(engine, job.job_id)
    assert [(r.kind, r.old_step, r.old_status, r.new_step, r.new_status) for r in rows] == [
        ("job", None, None, FIRST_VARIANT_STAGE, "queued")
    ] + [("variant", None, None, FIRST_VARIANT_STAGE, "queued")] * 3
    assert [r.job_variants_id for r in rows[1:]] == job.variant_ids
    assert {r.origin for r in rows} == {"cli:submit"}
    assert {r.tenant_id for r in rows} == {"tenant-a"}
    # All written by one transaction.
    assert len({r.xid for r in rows}) == 1


def test_state_change_records_old_and_new_state_and_origin(engine: Engine) -> None:
    job = create_job(engine, variants=1)
    v = job.variant_ids[0]
    set_variant(engine, v, FIRST_VARIANT_STAGE, "running", origin="dagster-run:abc123")
    set_variant(engine, v, FIRST_VARIANT_STAGE, "failed", error="boom")  # no origin set
    variant_events = [r for r in events(engine, job.job_id) if r.kind == "variant"]
    assert [(r.old_status, r.new_status, r.origin, r.error) for r in variant_events[1:]] == [
        ("queued", "running", "dagster-run:abc123", None),
        ("running", "failed", "external", "boom"),
    ]


def test_origin_is_local_to_its_transaction(engine: Engine) -> None:
    job = create_job(engine, variants=2)
    with transaction(engine, "dagster-run:first") as conn:
        set_variant_state(conn, job.variant_ids[0], FIRST_VARIANT_STAGE, "running")
    # A plain transaction on a pooled (possibly the same) connection: SET LOCAL must not leak.
    with engine.begin() as conn:
        set_variant_state(conn, job.variant_ids[1], FIRST_VARIANT_STAGE, "running")
    last = events(engine, job.job_id)
    by_variant = {r.job_variants_id: r.origin for r in last if r.kind == "variant" and r.new_status == "running"}
    assert by_variant == {job.variant_ids[0]: "dagster-run:first", job.variant_ids[1]: "external"}


def test_update_without_state_change_writes_no_event(engine: Engine) -> None:
    job = create_job(engine, variants=1)
    before = len(events(engine, job.job_id))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs_variants SET error = 'note', img_asset_id = NULL WHERE job_id = :j"),
                     {"j": str(job.job_id)})
        conn.execute(sa.text("UPDATE jobs SET error = 'note' WHERE job_id = :j"), {"j": str(job.job_id)})
    assert len(events(engine, job.job_id)) == before


def test_direct_insert_by_another_system_goes_through_the_same_triggers(engine: Engine) -> None:
    job = create_job(engine, variants=1)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET expected_variants = 2 WHERE job_id = :j"), {"j": str(job.job_id)})
        # An image generator inserting a finished variant directly, with column defaults for the rest.
        conn.execute(
            sa.text("INSERT INTO jobs_variants (job_id, creation_order, current_step, status) "
                    "VALUES (:j, 2, :s, 'done')"),
            {"j": str(job.job_id), "s": FIRST_VARIANT_STAGE},
        )
    last = events(engine, job.job_id)
    inserted = [r for r in last if r.kind == "variant" and r.new_status == "done"]
    assert len(inserted) == 1 and inserted[0].origin == "external" and inserted[0].old_status is None
    # The rollup saw a variant leave 'queued': the job is running at the least-advanced stage.
    assert job_state(engine, job.job_id)[:2] == (FIRST_VARIANT_STAGE, "running")


def test_notify_carries_the_event_id(engine: Engine, db_url: str) -> None:
    job = create_job(engine, variants=1)
    with NotifyListener(db_url, [VARIANT_CHANNEL, JOB_CHANNEL]) as listener:
        set_variant(engine, job.variant_ids[0], FIRST_VARIANT_STAGE, "running", origin="test")
        received = []
        for _ in range(50):  # bounded: each wait returns as soon as something arrives
            received += listener.wait(timeout_s=2.0)
            if {n.channel for n in received} >= {VARIANT_CHANNEL, JOB_CHANNEL}:
                break
    rows = [r for r in events(engine, job.job_id) if r.new_status == "running"]
    ids_by_kind = {r.kind: r.id for r in rows}
    by_channel = {n.channel: n.payload for n in received}
    assert by_channel[VARIANT_CHANNEL]["event_id"] == ids_by_kind["variant"]
    assert by_channel[VARIANT_CHANNEL]["job_variants_id"] == str(job.variant_ids[0])
    assert by_channel[VARIANT_CHANNEL]["status"] == "running"
    assert by_channel[JOB_CHANNEL]["event_id"] == ids_by_kind["job"]
    assert by_channel[JOB_CHANNEL]["job_id"] == str(job.job_id)


def test_notify_is_not_sent_for_a_rolled_back_change(engine: Engine, db_url: str) -> None:
    job = create_job(engine, variants=1)
    with NotifyListener(db_url) as listener:
        with engine.connect() as conn:
            set_variant_state(conn, job.variant_ids[0], FIRST_VARIANT_STAGE, "running")
            conn.rollback()
        assert listener.wait(timeout_s=0.5) == []
    assert all(r.new_status == "queued" for r in events(engine, job.job_id))


@pytest.mark.parametrize(
    ("stage", "status", "error_fragment"),
    [
        (FIRST_JOB_STAGE, "running", "not a variant-level stage"),
        ("no_such_stage", "running", "foreign key"),
        (FIRST_VARIANT_STAGE, "paused", "check constraint"),
    ],
)
def test_invalid_variant_states_are_rejected(engine: Engine, stage: str, status: str, error_fragment: str) -> None:
    job = create_job(engine, variants=1)
    with pytest.raises(sa.exc.DBAPIError) as info, engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs_variants SET current_step = :s, status = :st WHERE job_id = :j"),
                     {"s": stage, "st": status, "j": str(job.job_id)})
    assert error_fragment in str(info.value).lower()


def test_python_state_helpers_refuse_unknown_states(engine: Engine) -> None:
    job = create_job(engine, variants=1)
    with engine.begin() as conn:
        with pytest.raises(ValueError, match="not a variant-level stage"):
            set_variant_state(conn, job.variant_ids[0], FIRST_JOB_STAGE, "running")
        with pytest.raises(ValueError, match="unknown status"):
            set_variant_state(conn, job.variant_ids[0], FIRST_VARIANT_STAGE, "paused")


def test_compare_and_set_claim(engine: Engine) -> None:
    job = create_job(engine, variants=1)
    v = job.variant_ids[0]
    with engine.begin() as conn:
        assert set_variant_state(conn, v, FIRST_VARIANT_STAGE, "running", expected=(FIRST_VARIANT_STAGE, "queued"))
    with engine.begin() as conn:
        # A second claimer of the same state loses and changes nothing.
        assert not set_variant_state(conn, v, FIRST_VARIANT_STAGE, "running",
                                        expected=(FIRST_VARIANT_STAGE, "queued"))
    assert len([r for r in events(engine, job.job_id) if r.kind == "variant"]) == 2


def test_timings_follow_the_state(engine: Engine) -> None:
    job = create_job(engine, variants=1)
    v = job.variant_ids[0]

    def times() -> sa.Row:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT created_at, updated_at, started_at, finished_at "
                                        "FROM jobs_variants WHERE job_variants_id = :v"), {"v": str(v)}).one()

    queued = times()
    assert queued.started_at is None and queued.finished_at is None
    set_variant(engine, v, FIRST_VARIANT_STAGE, "running")
    running = times()
    assert running.started_at is not None and running.finished_at is None
    assert running.updated_at > queued.updated_at
    set_variant(engine, v, LAST_VARIANT_STAGE, "done")
    done = times()
    assert done.started_at == running.started_at and done.finished_at is not None
    set_variant(engine, v, LAST_VARIANT_STAGE, "running")  # a re-run: no longer finished
    assert times().finished_at is None
    with engine.connect() as conn:
        job_times = conn.execute(sa.text("SELECT started_at, finished_at FROM jobs WHERE job_id = :j"),
                                 {"j": str(job.job_id)}).one()
    assert job_times.started_at is not None


# --- Rollup rules ------------------------------------------------------------------------------


def test_job_follows_the_least_advanced_unfinished_variant(engine: Engine) -> None:
    job = create_job(engine, variants=3)
    a, b, c = job.variant_ids
    assert job_state(engine, job.job_id)[:2] == (FIRST_VARIANT_STAGE, "queued")
    third, fifth = VARIANT_STAGES[2].name, VARIANT_STAGES[4].name
    set_variant(engine, a, fifth, "running")
    # b and c have not left (first stage, queued) but a has: the job runs at the least advanced stage.
    assert job_state(engine, job.job_id)[:2] == (FIRST_VARIANT_STAGE, "running")
    set_variant(engine, b, third, "done")
    set_variant(engine, c, fifth, "queued")
    assert job_state(engine, job.job_id)[:2] == (third, "running")
    set_variant(engine, b, LAST_VARIANT_STAGE, "done")  # finished: no longer the least advanced
    assert job_state(engine, job.job_id)[:2] == (fifth, "running")


def test_all_expected_variants_done_completes_the_job_once(engine: Engine) -> None:
    job = create_job(engine, variants=3)
    for v in job.variant_ids:
        set_variant(engine, v, LAST_VARIANT_STAGE, "done")
    assert job_state(engine, job.job_id) == (LAST_VARIANT_STAGE, "done", None)
    done_events = [r for r in events(engine, job.job_id)
                   if r.kind == "job" and (r.new_step, r.new_status) == (LAST_VARIANT_STAGE, "done")]
    assert len(done_events) == 1


def test_some_failed_still_completes_the_job(engine: Engine) -> None:
    job = create_job(engine, variants=3)
    a, b, c = job.variant_ids
    set_variant(engine, a, VARIANT_STAGES[1].name, "failed", error="bad image")
    set_variant(engine, b, LAST_VARIANT_STAGE, "done")
    assert job_state(engine, job.job_id)[1] == "running"  # c is still queued
    set_variant(engine, c, LAST_VARIANT_STAGE, "done")
    assert job_state(engine, job.job_id) == (LAST_VARIANT_STAGE, "done", None)


def test_all_failed_fails_the_job_with_a_reason(engine: Engine) -> None:
    job = create_job(engine, variants=2)
    for v in job.variant_ids:
        set_variant(engine, v, FIRST_VARIANT_STAGE, "failed", error="generator crashed")
    assert job_state(engine, job.job_id) == (LAST_VARIANT_STAGE, "failed", "all 2 variants failed")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT finished_at IS NOT NULL FROM jobs WHERE job_id = :j"),
                            {"j": str(job.job_id)}).scalar_one()


def test_rollup_counts_expected_variants_not_existing_rows(engine: Engine) -> None:
    job = create_job(engine, variants=1)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET expected_variants = 3 WHERE job_id = :j"), {"j": str(job.job_id)})
    set_variant(engine, job.variant_ids[0], LAST_VARIANT_STAGE, "done")
    # One of three expected variants exists and is done: the job is not done.
    assert job_state(engine, job.job_id)[:2] == (FIRST_VARIANT_STAGE, "running")
    with engine.begin() as conn:
        for order in (2, 3):
            conn.execute(sa.text("INSERT INTO jobs_variants (job_id, creation_order, current_step, status) "
                                 "VALUES (:j, :o, :s, 'done')"),
                         {"j": str(job.job_id), "o": order, "s": LAST_VARIANT_STAGE})
    assert job_state(engine, job.job_id)[:2] == (LAST_VARIANT_STAGE, "done")


def test_rollup_leaves_a_job_in_its_job_level_stages_alone(engine: Engine) -> None:
    job = create_job(engine, variants=2)
    a, b = job.variant_ids
    set_variant(engine, a, LAST_VARIANT_STAGE, "done")
    set_variant(engine, b, LAST_VARIANT_STAGE, "done")
    with transaction(engine, "test") as conn:
        set_job_state(conn, job.job_id, FIRST_JOB_STAGE, "running")
    set_variant(engine, a, LAST_VARIANT_STAGE, "failed", error="late failure")
    assert job_state(engine, job.job_id)[:2] == (FIRST_JOB_STAGE, "running")


def test_retrying_a_variant_reopens_a_finished_variant_phase(engine: Engine) -> None:
    job = create_job(engine, variants=1)
    v = job.variant_ids[0]
    set_variant(engine, v, FIRST_VARIANT_STAGE, "failed", error="x")
    assert job_state(engine, job.job_id)[1] == "failed"
    set_variant(engine, v, FIRST_VARIANT_STAGE, "queued")
    # Reset for a retry: the job is queued again, with the error cleared.
    assert job_state(engine, job.job_id) == (FIRST_VARIANT_STAGE, "queued", None)
    set_variant(engine, v, VARIANT_STAGES[1].name, "running")
    assert job_state(engine, job.job_id) == (VARIANT_STAGES[1].name, "running", None)


def test_reader_sees_submit_events(engine: Engine) -> None:
    job = create_job(engine, variants=2)
    got, _ = read_events_after(engine, None)
    assert [(e.level, e.job_id) for e in got] == [("job", job.job_id)] + [("variant", job.job_id)] * 2
