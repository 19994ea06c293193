"""Recovery planning against the real database: where a row restarts, which rows are due or
stalled, and which running rows lost their worker.

Rows are put into their states with direct writes (``tests.fixtures.state``) and the pipeline's own
claims (``claims.claim``, ``claims.mark_failed``); only ``updated_at`` is aged by hand (with the guard
trigger that keeps it current switched off inside this test's own database).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.fixtures.db import create_job
from tests.fixtures.state import set_job_state, set_variant_state
from variant_pipeline import stages as stage_graph
from variant_pipeline.data import partition_state
from variant_pipeline.data.engine import make_engine, transaction
from variant_pipeline.data.locks import lock_key
from variant_pipeline.data.outbox import read_events_after
from variant_pipeline.sensors.outbox import plan_tick
from variant_pipeline.state import claims, recovery
from variant_pipeline.state.origins import RECOVERY_ORIGIN
from variant_pipeline.state.recovery import Restart
from variant_pipeline.state.retry import RetryPolicy
from variant_pipeline.state.transitions import restart_stage

POLICY = RetryPolicy(max_attempts=3, backoff_s=30)
VARIANT_ORDER = [s.name for s in stage_graph.VARIANT_STAGES]
JOB_ORDER = [s.name for s in stage_graph.JOB_STAGES]


# --- restart_stage (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize(("level", "stage", "status", "expected"), [
    ("variant", "img_gen", "done", "vlm_analyze"),
    ("variant", "planner", "done", "overlay"),
    ("variant", "overlay", "done", "vlm_judge"),
    ("variant", "readability_eval", "done", "iou_eval"),
    ("variant", "iou_eval", "done", None),  # a variant ends there
    ("job", "iou_eval", "done", "ad_copy_gen_kor"),  # the rollup: the job stages come next
    ("job", "ad_copy_gen_kor", "done", "instagram_feed_gen"),
    ("job", "instagram_feed_gen", "done", None),
    ("job", "planner", "done", None),  # a job in its variant phase waits for its variants
    ("variant", "overlay", "queued", "overlay"),
    ("variant", "overlay", "failed", "overlay"),
    ("variant", "overlay", "running", "overlay"),
    ("job", "ad_copy_gen_kor", "failed", "ad_copy_gen_kor"),
    ("job", "instagram_feed_gen", "queued", "instagram_feed_gen"),
    ("job", "overlay", "queued", None),  # not a job stage: nothing for the job itself to run
])
def test_restart_stage_follows_the_stage_graph(level, stage, status, expected) -> None:
    assert restart_stage(level, stage, status) == expected


def test_every_done_stage_restarts_at_the_next_position() -> None:
    for order, level in ((VARIANT_ORDER, "variant"), (JOB_ORDER, "job")):
        for i, name in enumerate(order[:-1]):
            assert restart_stage(level, name, "done") == order[i + 1]


def test_restart_follows_positions_where_text_order_would_differ() -> None:
    """The original compared stage names as text; for planner that picks the wrong next stage."""
    def next_by_text(stage: str) -> str | None:
        return min((name for name in VARIANT_ORDER if name > stage), default=None)

    assert "overlay" < "planner"  # text order puts overlay before planner ...
    assert VARIANT_ORDER.index("planner") < VARIANT_ORDER.index("overlay")  # ... the pipeline after it
    assert next_by_text("planner") == "readability_eval"
    assert restart_stage("variant", "planner", "done") == "overlay"
    differing = [s for s in VARIANT_ORDER[:-1] if next_by_text(s) != restart_stage("variant", s, "done")]
    assert len(differing) >= 3  # not one unlucky pair: most of the graph


# --- helpers ------------------------------------------------------------------------------------


def _set_variant(engine: Engine, key: str, stage: str, status: str, origin: str = "test:setup") -> None:
    with transaction(engine, origin) as conn:
        assert set_variant_state(conn, key, stage, status)


_TABLES = {"variant": ("jobs_variants", "job_variants_id"), "job": ("jobs", "job_id")}


def _age(engine: Engine, level: str, key: str, seconds: float) -> None:
    """Move ``updated_at`` into the past (the guard trigger would reset it to now())."""
    table, id_column = _TABLES[level]
    trigger = f"{table}_guard_state"
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}"))
        conn.execute(sa.text(f"UPDATE {table} SET updated_at = now() - make_interval(secs => :s) "
                             f"WHERE {id_column} = CAST(:k AS uuid)"), {"s": seconds, "k": key})
        conn.execute(sa.text(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}"))


def _fail_attempt(engine: Engine, key: str, stage: str, *, backoff_s: float, continues: bool,
                  run: str = "run-1") -> claims.Claim:
    """One real attempt at ``stage`` that failed and was scheduled for a retry."""
    with transaction(engine, f"dagster-run:{run}") as conn:
        claim = claims.claim(conn, stage=stage, partition_key=key, run_id=run, origin=f"dagster-run:{run}",
                             continues_attempts=continues)
    with transaction(engine, f"dagster-run:{run}") as conn:
        assert claims.mark_failed(conn, level=claim.level, partition_key=key, stage=stage, attempt=claim.attempt,
                                  attempt_id=claim.attempt_id, reason="RuntimeError: boom", retryable=True,
                                  policy=RetryPolicy(max_attempts=5, backoff_s=backoff_s))
    return claim


def _row(engine: Engine, level: str, key: str) -> dict:
    table, id_column = _TABLES[level]
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(
            f"SELECT current_step, status, attempt, run_id, retry_at, error, now() AS now FROM {table} "
            f"WHERE {id_column} = CAST(:k AS uuid)"), {"k": key}).mappings().one())


def _by_key(restarts: list[Restart]) -> dict[str, Restart]:
    keys = [r.partition_key for r in restarts]
    assert len(keys) == len(set(keys)), "one restart per partition"
    return {r.partition_key: r for r in restarts}


@pytest.fixture
def job(engine: Engine):
    return create_job(engine, variants=3)


# --- find_restarts ------------------------------------------------------------------------------


def test_fresh_rows_are_not_stalled(engine, job) -> None:
    assert recovery.find_restarts(engine, stall_after_s=60, busy_partitions=[]) == []


def test_a_due_retry_continues_its_attempts_under_a_key_naming_the_last_attempt(engine, job) -> None:
    key = str(job.variant_ids[0])
    first = _fail_attempt(engine, key, "vlm_analyze", backoff_s=0, continues=False)
    second = _fail_attempt(engine, key, "vlm_analyze", backoff_s=0, continues=True, run="run-2")
    assert second.attempt == 2 and second.attempt_id > first.attempt_id

    restarts = _by_key(recovery.find_restarts(engine, stall_after_s=600, busy_partitions=[]))
    assert set(restarts) == {key}
    restart = restarts[key]
    assert (restart.level, restart.start_stage, restart.why, restart.continues_attempts) == (
        "variant", "vlm_analyze", "retry", True)
    assert f":after-attempt:{second.attempt_id}:" in restart.run_key
    assert key in restart.run_key


def test_the_retry_key_counts_attempts_of_its_own_stage_only(engine, job) -> None:
    key = str(job.variant_ids[0])
    earlier = _fail_attempt(engine, key, "img_gen", backoff_s=0, continues=False)
    with transaction(engine, "test:setup") as conn:  # a later attempt of another stage
        claims.claim(conn, stage="yolo_detect", partition_key=key, run_id="r", origin="t", continues_attempts=False)
    with engine.begin() as conn:  # back to the img_gen retry, as if yolo_detect never happened
        conn.execute(sa.text("UPDATE jobs_variants SET current_step = 'img_gen', status = 'queued', "
                             "retry_at = now() - interval '1 second' WHERE job_variants_id = CAST(:k AS uuid)"),
                     {"k": key})
    [restart] = recovery.find_restarts(engine, stall_after_s=600, busy_partitions=[])
    assert f":after-attempt:{earlier.attempt_id}:" in restart.run_key


def test_a_retry_still_backing_off_is_neither_due_nor_stalled(engine, job) -> None:
    key = str(job.variant_ids[0])
    _fail_attempt(engine, key, "vlm_analyze", backoff_s=3600, continues=False)
    _age(engine, "variant", key, 1000)  # unchanged for long, but its retry is an hour away
    assert recovery.find_restarts(engine, stall_after_s=600, busy_partitions=[]) == []
    assert recovery.find_restarts(engine, stall_after_s=1, busy_partitions=[]) == []


def test_a_due_retry_nobody_picked_up_for_a_stall_period_is_restarted_as_a_stall(engine, job) -> None:
    key = str(job.variant_ids[0])
    _fail_attempt(engine, key, "vlm_analyze", backoff_s=0, continues=False)
    [retry] = recovery.find_restarts(engine, stall_after_s=600, busy_partitions=[])
    with engine.begin() as conn:  # the retry's run was lost: its key is spent, the row never moved
        conn.execute(sa.text("UPDATE jobs_variants SET retry_at = now() - interval '1000 seconds' "
                             "WHERE job_variants_id = CAST(:k AS uuid)"), {"k": key})
    [stalled] = recovery.find_restarts(engine, stall_after_s=600, busy_partitions=[])
    assert (stalled.why, stalled.start_stage, stalled.continues_attempts) == ("stalled", "vlm_analyze", True)
    assert stalled.run_key != retry.run_key


def test_a_stalled_variant_restarts_at_its_next_stage_in_pipeline_order(engine, job) -> None:
    key = str(job.variant_ids[1])
    _set_variant(engine, key, "planner", "done")
    assert recovery.find_restarts(engine, stall_after_s=600, busy_partitions=[]) == []  # not yet
    _age(engine, "variant", key, 1000)
    [restart] = recovery.find_restarts(engine, stall_after_s=600, busy_partitions=[])
    assert (restart.level, restart.partition_key, restart.start_stage, restart.why, restart.continues_attempts) == (
        "variant", key, "overlay", "stalled", False)
    assert restart.run_key.startswith(f"stalled:variant:{key}:overlay:")


def test_a_finished_variant_and_failed_rows_are_never_restarted(engine, job) -> None:
    done, failed, running = (str(v) for v in job.variant_ids)
    _set_variant(engine, done, "iou_eval", "done")
    _set_variant(engine, failed, "overlay", "failed")
    _set_variant(engine, running, "overlay", "running")
    for key in (done, failed, running):
        _age(engine, "variant", key, 1000)
    assert recovery.find_restarts(engine, stall_after_s=600, busy_partitions=[]) == []


def test_a_job_whose_variants_finished_restarts_at_its_first_job_stage(engine, job) -> None:
    for v in job.variant_ids:
        _set_variant(engine, str(v), "iou_eval", "done")
    job_key = str(job.job_id)
    assert (_row(engine, "job", job_key)["current_step"], _row(engine, "job", job_key)["status"]) == (
        "iou_eval", "done")
    _age(engine, "job", job_key, 1000)
    [restart] = recovery.find_restarts(engine, stall_after_s=600, busy_partitions=[])
    assert (restart.level, restart.partition_key, restart.start_stage, restart.why) == (
        "job", job_key, "ad_copy_gen_kor", "stalled")

    with transaction(engine, "test:setup") as conn:
        set_job_state(conn, job_key, "instagram_feed_gen", "done")
    _age(engine, "job", job_key, 1000)
    assert recovery.find_restarts(engine, stall_after_s=600, busy_partitions=[]) == []  # finished


def test_a_partition_with_a_run_in_flight_is_skipped(engine, job) -> None:
    stalled, retrying = str(job.variant_ids[0]), str(job.variant_ids[1])
    _set_variant(engine, stalled, "planner", "done")
    _age(engine, "variant", stalled, 1000)
    _fail_attempt(engine, retrying, "img_gen", backoff_s=0, continues=False)
    assert set(_by_key(recovery.find_restarts(engine, 600, busy_partitions=[]))) == {stalled, retrying}
    assert set(_by_key(recovery.find_restarts(engine, 600, busy_partitions=[stalled]))) == {retrying}
    assert recovery.find_restarts(engine, 600, busy_partitions={stalled, retrying}) == []


def test_run_keys_repeat_until_the_row_changes(engine, job) -> None:
    stalled, retrying = str(job.variant_ids[0]), str(job.variant_ids[1])
    _set_variant(engine, stalled, "planner", "done")
    _age(engine, "variant", stalled, 1050)  # mid-period: a tick later is still period 1
    _fail_attempt(engine, retrying, "img_gen", backoff_s=0, continues=False)

    first = _by_key(recovery.find_restarts(engine, 1000, busy_partitions=[]))
    second = _by_key(recovery.find_restarts(engine, 1000, busy_partitions=[]))
    assert {k: r.run_key for k, r in first.items()} == {k: r.run_key for k, r in second.items()}
    assert len(first) == 2

    _set_variant(engine, stalled, "overlay", "done")  # it moved on, then stalled again
    _age(engine, "variant", stalled, 1050)
    _fail_attempt(engine, retrying, "img_gen", backoff_s=0, continues=True, run="run-2")  # failed again
    third = _by_key(recovery.find_restarts(engine, 1000, busy_partitions=[]))
    assert third[stalled].start_stage == "vlm_judge"
    assert third[stalled].run_key != first[stalled].run_key
    assert third[retrying].run_key != first[retrying].run_key


def test_a_stall_period_of_zero_restarts_every_waiting_row_without_crashing(engine, job) -> None:
    restarts = _by_key(recovery.find_restarts(engine, stall_after_s=0, busy_partitions=[]))
    assert set(restarts) == {str(v) for v in job.variant_ids}  # fresh (img_gen, queued) rows
    assert {r.start_stage for r in restarts.values()} == {"img_gen"}
    again = _by_key(recovery.find_restarts(engine, stall_after_s=0, busy_partitions=[]))
    assert {k: r.run_key for k, r in again.items()} == {k: r.run_key for k, r in restarts.items()}


# --- recover_lost_claims ------------------------------------------------------------------------


def _claim(engine: Engine, key: str, stage: str, run: str = "run-1") -> claims.Claim:
    """A worker's claim (row running, attempt recorded) with no partition lock behind it: a dead worker."""
    with transaction(engine, f"dagster-run:{run}") as conn:
        return claims.claim(conn, stage=stage, partition_key=key, run_id=run, origin=f"dagster-run:{run}",
                            continues_attempts=False)


def test_a_running_row_without_its_lock_holder_becomes_a_lost_attempt_and_a_retry(engine, job) -> None:
    key = str(job.variant_ids[0])
    claim = _claim(engine, key, "vlm_analyze")
    assert (_row(engine, "variant", key)["status"], claim.attempt) == ("running", 1)

    lost = recovery.recover_lost_claims(engine, POLICY)
    assert [(c.level, c.partition_key, c.stage, c.attempt, c.run_id, c.will_retry) for c in lost] == [
        ("variant", key, "vlm_analyze", 1, "run-1", True)]
    assert lost[0].worker == partition_state.worker_id()

    row = _row(engine, "variant", key)
    assert (row["current_step"], row["status"], row["attempt"]) == ("vlm_analyze", "queued", 1)
    assert "worker lost" in row["error"] and "run-1" in row["error"]
    # Due at once, whatever the backoff (30 s in POLICY): a lost worker says nothing about the stage.
    assert row["retry_at"] <= row["now"] and row["error"].endswith("(retrying now)")
    [attempt] = partition_state.attempts_of(engine, key)
    assert (attempt["attempt_id"], attempt["outcome"], attempt["will_retry"]) == (claim.attempt_id, "lost", True)
    assert attempt["finished_at"] is not None and "worker lost" in attempt["error"]

    assert recovery.recover_lost_claims(engine, POLICY) == []  # recorded once


def test_a_lost_claim_without_attempts_left_fails_the_row(engine, job) -> None:
    key = str(job.variant_ids[0])
    _claim(engine, key, "vlm_analyze")
    [lost] = recovery.recover_lost_claims(engine, RetryPolicy(max_attempts=1, backoff_s=30))
    assert not lost.will_retry
    row = _row(engine, "variant", key)
    assert (row["current_step"], row["status"], row["retry_at"]) == ("vlm_analyze", "failed", None)
    assert "worker lost" in row["error"]
    assert [(a["outcome"], a["will_retry"]) for a in partition_state.attempts_of(engine, key)] == [("lost", False)]


def test_a_lost_job_stage_is_retried_on_the_job_row(engine, job) -> None:
    for v in job.variant_ids:
        _set_variant(engine, str(v), "iou_eval", "done")
    job_key = str(job.job_id)
    _claim(engine, job_key, "ad_copy_gen_kor")
    [lost] = recovery.recover_lost_claims(engine, POLICY)
    assert (lost.level, lost.partition_key, lost.stage, lost.will_retry) == ("job", job_key, "ad_copy_gen_kor", True)
    row = _row(engine, "job", job_key)
    assert (row["current_step"], row["status"]) == ("ad_copy_gen_kor", "queued")
    assert [a["outcome"] for a in partition_state.attempts_of(engine, job_key)] == ["lost"]


@contextmanager
def _lock_held_elsewhere(db_url: str, key: str) -> Iterator[None]:
    """The partition lock, held by a live session of its own (unpooled: closing it ends the session).
    On leaving, waits until the server has ended that session: a client's close returns before the
    server process behind it exits and frees its locks, and a probe in between would still see the
    lock held (it did once in a full suite run)."""
    other = make_engine(db_url, pool=False)
    try:
        with other.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(key)})
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            conn.commit()
            yield
    finally:
        other.dispose()
    watcher = make_engine(db_url, pool=False)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with watcher.connect() as conn:
                if not conn.execute(sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).first():
                    break
            time.sleep(0.02)
        else:
            raise AssertionError(f"the lock holder's session (pid {pid}) did not end within 10 s")
    finally:
        watcher.dispose()


def test_a_row_whose_lock_a_live_session_holds_is_left_alone(engine, db_url, job) -> None:
    key = str(job.variant_ids[0])
    claim = _claim(engine, key, "vlm_analyze")
    with _lock_held_elsewhere(db_url, key):
        assert recovery.recover_lost_claims(engine, POLICY) == []
        row = _row(engine, "variant", key)
        assert (row["status"], row["run_id"], row["error"]) == ("running", "run-1", None)
        assert [a["outcome"] for a in partition_state.attempts_of(engine, key)] == ["running"]
    # The session ended, and its lock with it: now the claim is lost.
    [lost] = recovery.recover_lost_claims(engine, POLICY)
    assert lost.partition_key == key and lost.attempt == claim.attempt


def test_recovery_writes_start_no_outbox_run_except_the_job_rollup(engine, db_url, job) -> None:
    """The recovery sensor launches its own retries; its writes are not requests. But the rollup
    its write causes (the last variant failing for good) still starts the job stages."""
    retried, failing, done = (str(v) for v in job.variant_ids)
    _set_variant(engine, done, "iou_eval", "done")
    _, cursor = read_events_after(engine, None, limit=10_000)

    _claim(engine, retried, "vlm_analyze", run="a")
    _claim(engine, failing, "overlay", run="b")
    _, cursor = read_events_after(engine, cursor, limit=10_000)  # past the claims
    with _lock_held_elsewhere(db_url, retried):  # the worker of "retried" is alive: its turn comes later
        [lost] = recovery.recover_lost_claims(engine, RetryPolicy(max_attempts=1, backoff_s=0))
    assert lost.partition_key == failing
    events, cursor = read_events_after(engine, cursor, limit=10_000)
    assert [(e.level, e.new_stage, e.new_status, e.origin) for e in events] == [
        ("variant", "overlay", "failed", RECOVERY_ORIGIN)]  # the job stays (vlm_analyze, running)
    assert plan_tick(events, [retried, failing, done], [str(job.job_id)]).runs == []

    # The retried variant's worker is lost too; a retry is scheduled (recovery launches it) ...
    [lost] = recovery.recover_lost_claims(engine, RetryPolicy(max_attempts=3, backoff_s=0))
    assert lost.partition_key == retried and lost.will_retry
    events, cursor = read_events_after(engine, cursor, limit=10_000)
    assert [(e.level, e.new_status, e.origin) for e in events if e.level == "variant"] == [
        ("variant", "queued", RECOVERY_ORIGIN)]
    assert plan_tick(events, [retried, failing, done], [str(job.job_id)]).runs == []

    # ... and when it fails for good, the job rolls up and its job stages start.
    _claim(engine, retried, "vlm_analyze", run="c")
    _, cursor = read_events_after(engine, cursor, limit=10_000)
    recovery.recover_lost_claims(engine, RetryPolicy(max_attempts=1, backoff_s=0))
    events, cursor = read_events_after(engine, cursor, limit=10_000)
    assert ("job", "iou_eval", "done", RECOVERY_ORIGIN) in {
        (e.level, e.new_stage, e.new_status, e.origin) for e in events}
    [run] = plan_tick(events, [retried, failing, done], [str(job.job_id)]).runs
    assert (run.level, run.partition_key, run.start_stage) == ("job", str(job.job_id), "ad_copy_gen_kor")


# --- orphans of a failed run: restarted at once, not after the stall period ---------------------


def _failed(key: str, seconds_from_now: float, run: str = "dead-run", chain: int = 0):
    """A lookup answering that ``key``'s latest run failed at now + seconds (the others' did not)."""
    from datetime import UTC, datetime

    ended = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    asked: list[list[str]] = []

    def lookup(keys: list[str]) -> dict[str, recovery.FailedRun]:
        asked.append(keys)
        return {k: recovery.FailedRun(run, ended, chain) for k in keys if k == key}
    lookup.asked = asked  # type: ignore[attr-defined]
    return lookup


def test_a_variant_whose_run_failed_between_stages_restarts_at_once(engine, job) -> None:
    key = str(job.variant_ids[0])
    _set_variant(engine, key, "planner", "done")  # its run committed planner, then died
    [restart] = recovery.find_restarts(engine, stall_after_s=300, busy_partitions=[], failed_runs=_failed(key, +1))
    assert (restart.partition_key, restart.start_stage, restart.why, restart.continues_attempts) == (
        key, "overlay", "run_failed", False)
    assert (restart.retries_run, restart.chain) == ("dead-run", 1)
    assert restart.run_key == f"run-failed:variant:{key}:overlay:dead-run"  # one restart per failed run
    # Without the failed run (or with a run still in flight) it is left to the stall rule.
    assert recovery.find_restarts(engine, stall_after_s=300, busy_partitions=[]) == []
    assert recovery.find_restarts(engine, stall_after_s=300, busy_partitions=[key], failed_runs=_failed(key, +1)) == []


def test_a_run_that_failed_before_the_row_last_changed_says_nothing_about_it(engine, job) -> None:
    """The row changed after that run ended (a new submission, a person's retry): the outbox
    sensor's run for the new state is on its way, and must not be raced."""
    key = str(job.variant_ids[0])
    _set_variant(engine, key, "img_gen", "queued")
    assert recovery.find_restarts(engine, stall_after_s=300, busy_partitions=[], failed_runs=_failed(key, -60)) == []


def test_a_due_retry_whose_run_failed_restarts_with_its_attempts_counting_on(engine, job) -> None:
    key = str(job.variant_ids[0])
    _fail_attempt(engine, key, "vlm_analyze", backoff_s=0, continues=False)  # due now
    [restart] = recovery.find_restarts(engine, stall_after_s=300, busy_partitions=[], failed_runs=_failed(key, +1))
    assert (restart.why, restart.start_stage, restart.continues_attempts) == ("run_failed", "vlm_analyze", True)
    # A retry still backing off is not asked about at all.
    other = str(job.variant_ids[1])
    _fail_attempt(engine, other, "vlm_analyze", backoff_s=3600, continues=False, run="run-9")
    lookup = _failed(key, +1)
    restarts = recovery.find_restarts(engine, stall_after_s=300, busy_partitions=[], failed_runs=lookup)
    assert {r.partition_key for r in restarts} == {key}
    assert all(other not in keys for keys in lookup.asked)


def test_fast_restarts_stop_after_a_chain_and_leave_it_to_the_stall_rule(engine, job) -> None:
    key = str(job.variant_ids[0])
    _set_variant(engine, key, "planner", "done")
    chained = _failed(key, +1, run="third-restart", chain=recovery.MAX_FAST_RESTARTS)
    assert recovery.find_restarts(engine, stall_after_s=300, busy_partitions=[], failed_runs=chained) == []
    _age(engine, "variant", key, 400)
    [stalled] = recovery.find_restarts(engine, stall_after_s=300, busy_partitions=[], failed_runs=chained)
    assert stalled.why == "stalled"
