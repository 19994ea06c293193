"""The stage protocol under faults: one worker per partition, attempts, retries, timeouts, fencing.

The stage work is replaced by small handlers (the real handlers are tested elsewhere); the lock,
the fence, the attempt records and the recovery of a dead session are the real ones, against
the real PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.fixtures.db import create_job
from variant_pipeline import handlers
from variant_pipeline.config import load_settings
from variant_pipeline.data import locks, partition_state
from variant_pipeline.data.storage import AssetStore
from variant_pipeline.handlers import HandlerContext, StageOutcome, execute_stage
from variant_pipeline.state import claims, recovery
from variant_pipeline.state.attempts import StageFailed, StageInputError
from variant_pipeline.state.retry import RetryPolicy

STAGE = "img_gen"


def _ctx(engine, key: str, tmp_path: Path, origin: str = "dagster-run:test-run", **settings) -> HandlerContext:
    base = load_settings()
    return HandlerContext(engine=engine, store=AssetStore(tmp_path / "assets"),
                          settings=base.model_copy(update=settings), models=None,  # type: ignore[arg-type]
                          origin=origin, partition_key=key, log=lambda _m: None,
                          run_id=origin.removeprefix("dagster-run:"))


def _row(engine, key: str) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(
            "SELECT current_step, status, attempt, run_id, retry_at, error, now() AS now "
            "FROM jobs_variants WHERE job_variants_id = :k"), {"k": key}).mappings().one())


def _attempts(engine, key: str) -> list[dict]:
    return partition_state.attempts_of(engine, key)


def _writes_marker(marker: list[str]):
    """A handler whose write (run inside the commit transaction, after the fence) leaves a mark."""
    def handler(ctx: HandlerContext) -> StageOutcome:
        def write(_conn: sa.Connection) -> None:
            marker.append(ctx.partition_key)
        return StageOutcome(write=write, metadata={"ok": True})
    return handler


@pytest.fixture
def variant(engine):
    job = create_job(engine, variants=3)
    return job, str(job.variant_ids[0])


def test_a_stage_run_is_one_recorded_attempt(engine, variant, tmp_path, monkeypatch) -> None:
    _job, key = variant
    written: list[str] = []
    monkeypatch.setitem(handlers.HANDLERS, STAGE, _writes_marker(written))
    execute_stage(STAGE, _ctx(engine, key, tmp_path))

    row = _row(engine, key)
    assert (row["current_step"], row["status"], row["attempt"], row["run_id"]) == (STAGE, "done", 1, "test-run")
    [attempt] = _attempts(engine, key)
    assert attempt["outcome"] == "done" and attempt["attempt"] == 1 and attempt["run_id"] == "test-run"
    assert attempt["worker"] == partition_state.worker_id() and attempt["finished_at"] is not None
    assert written == [key]


def test_a_second_worker_is_refused_while_the_first_holds_the_partition(engine, variant, tmp_path,
                                                                       monkeypatch) -> None:
    _job, key = variant
    written: list[str] = []
    monkeypatch.setitem(handlers.HANDLERS, STAGE, _writes_marker(written))
    first = _ctx(engine, key, tmp_path, origin="dagster-run:first", faults=f"{STAGE}:sleep=2")
    thread, errors = _start_in_background(engine, key, first)

    with pytest.raises(locks.PartitionBusy, match="being worked on by another run"):
        execute_stage(STAGE, _ctx(engine, key, tmp_path, origin="dagster-run:second"))
    assert _row(engine, key)["run_id"] == "first"  # the refused worker changed nothing
    thread.join()
    assert not errors
    assert [a["run_id"] for a in _attempts(engine, key)] == ["first"]
    assert written == [key]


def test_a_transient_failure_is_retried_with_backoff_until_attempts_run_out(engine, variant, tmp_path,
                                                                            monkeypatch) -> None:
    _job, key = variant
    ctx = _ctx(engine, key, tmp_path, faults=f"{STAGE}:raise", max_attempts=3, retry_backoff_s=10)
    delays = []
    for expected_attempt in (1, 2):
        with pytest.raises(StageFailed) as failure:
            execute_stage(STAGE, dataclasses.replace(ctx, continues_attempts=expected_attempt > 1))
        assert failure.value.will_retry
        row = _row(engine, key)
        assert (row["current_step"], row["status"], row["attempt"]) == (STAGE, "queued", expected_attempt)
        assert row["error"].startswith(f"attempt {expected_attempt} of 3 failed: InjectedFault")
        delays.append((row["retry_at"] - row["now"]).total_seconds())
    # Exponential: about 10 s after the first failure, 20 s after the second.
    assert 8 < delays[0] <= 10.5 and 18 < delays[1] <= 20.5

    with pytest.raises(StageFailed) as failure:
        execute_stage(STAGE, dataclasses.replace(ctx, continues_attempts=True))
    assert not failure.value.will_retry
    row = _row(engine, key)
    assert (row["status"], row["attempt"], row["retry_at"]) == ("failed", 3, None)
    assert row["error"].startswith("failed after 3 attempts: InjectedFault")
    attempts = _attempts(engine, key)
    assert [(a["attempt"], a["outcome"], a["will_retry"]) for a in attempts] == [
        (1, "failed", True), (2, "failed", True), (3, "failed", False)]


def test_bad_input_fails_at_once_without_retries(engine, variant, tmp_path, monkeypatch) -> None:
    _job, key = variant

    def bad_input(_ctx: HandlerContext) -> StageOutcome:
        raise StageInputError("product photo is 1x1 pixels; the minimum is 16 per side")

    monkeypatch.setitem(handlers.HANDLERS, STAGE, bad_input)
    with pytest.raises(StageFailed) as failure:
        execute_stage(STAGE, _ctx(engine, key, tmp_path))
    assert not failure.value.will_retry
    row = _row(engine, key)
    assert (row["status"], row["retry_at"]) == ("failed", None)
    assert row["error"] == "StageInputError: product photo is 1x1 pixels; the minimum is 16 per side"
    assert [a["will_retry"] for a in _attempts(engine, key)] == [False]


def test_a_hanging_stage_is_stopped_at_its_time_limit_and_retried(engine, variant, tmp_path) -> None:
    _job, key = variant
    ctx = _ctx(engine, key, tmp_path, faults=f"{STAGE}:hang", stage_timeouts={STAGE: 1.0})
    started = time.monotonic()
    with pytest.raises(StageFailed, match="did not finish within its time limit of 1 s"):
        execute_stage(STAGE, ctx)
    assert time.monotonic() - started < 10
    row = _row(engine, key)
    assert (row["status"], row["attempt"]) == ("queued", 1)
    assert "StageTimeout" in row["error"]
    # The partition is free again: the retry can claim it.
    lock = locks.PartitionLock(engine, key)
    assert lock.try_acquire()
    lock.release()


def test_a_worker_whose_session_died_is_recovered_and_its_late_results_discarded(
        engine, variant, tmp_path, monkeypatch) -> None:
    """The lock connection is terminated mid-stage (what a server restart or a network cut does);
    recovery takes the partition over; the old worker wakes up, finds the fence moved, writes nothing."""
    _job, key = variant
    written: list[str] = []
    monkeypatch.setitem(handlers.HANDLERS, STAGE, _writes_marker(written))
    ctx = _ctx(engine, key, tmp_path, origin="dagster-run:old", faults=f"{STAGE}:sleep=3")
    thread, errors = _start_in_background(engine, key, ctx)

    _end_lock_session(engine, key)
    lost = recovery.recover_lost_claims(engine, RetryPolicy(max_attempts=3, backoff_s=0))
    assert [(c.partition_key, c.stage, c.will_retry) for c in lost] == [(key, STAGE, True)]
    assert _row(engine, key)["status"] == "queued"

    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], claims.AttemptSuperseded)
    assert written == []  # the old attempt's outputs never reached the database
    attempts = _attempts(engine, key)
    assert [a["outcome"] for a in attempts] == ["lost"]
    assert "worker lost" in attempts[0]["error"]


def test_recovery_leaves_a_live_worker_alone(engine, variant, tmp_path, monkeypatch) -> None:
    _job, key = variant
    monkeypatch.setitem(handlers.HANDLERS, STAGE, _writes_marker([]))
    ctx = _ctx(engine, key, tmp_path, faults=f"{STAGE}:sleep=2")
    thread, errors = _start_in_background(engine, key, ctx)
    assert recovery.recover_lost_claims(engine, RetryPolicy(3, 0)) == []
    thread.join()
    assert not errors and _row(engine, key)["status"] == "done"


def _start_in_background(engine, key: str, ctx: HandlerContext) -> tuple[threading.Thread, list[BaseException]]:
    """Run the stage in a thread; return once it has claimed the partition."""
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(errors, execute_stage, STAGE, ctx))
    thread.start()
    _wait_for(lambda: _row(engine, key)["status"] == "running")
    return thread, errors


def _end_lock_session(engine, key: str) -> None:
    """Terminate the session holding the partition lock (what a server restart or a cut does)."""
    with engine.connect() as conn:
        holder = _lock_holder_pid(conn, locks.lock_key(key))
        assert holder is not None
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": holder})
        conn.commit()
    _wait_for(lambda: _holder(engine, key) is None)


def _holder(engine, key: str) -> int | None:
    with engine.connect() as conn:
        return _lock_holder_pid(conn, locks.lock_key(key))


def _lock_holder_pid(conn: sa.Connection, key: int) -> int | None:
    """The server process id of the session holding advisory lock ``key``."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return conn.execute(
        sa.text("""SELECT pid FROM pg_locks
                    WHERE locktype = 'advisory' AND granted AND objsubid = 1
                      AND classid::bigint = :high AND objid::bigint = :low LIMIT 1"""),
        {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF},
    ).scalar()


def _capture(errors: list[BaseException], fn, *args) -> None:
    try:
        fn(*args)
    except BaseException as exc:
        errors.append(exc)


def _wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_status_lists_every_attempt(engine, db_env, variant, tmp_path, monkeypatch, capsys) -> None:
    import json

    from variant_pipeline import cli

    job, key = variant
    with pytest.raises(StageFailed):
        execute_stage(STAGE, _ctx(engine, key, tmp_path, origin="dagster-run:r1", faults=f"{STAGE}:raise"))
    monkeypatch.setitem(handlers.HANDLERS, STAGE, _writes_marker([]))
    execute_stage(STAGE, dataclasses.replace(_ctx(engine, key, tmp_path, origin="dagster-run:r2"),
                                             continues_attempts=True))

    assert cli.main(["status", str(job.job_id), "--attempts"]) == 0
    out = capsys.readouterr().out
    assert f"{STAGE} attempt 1: failed  run r1" in out and f"{STAGE} attempt 2: done  run r2" in out
    assert "error: InjectedFault: fault drill: img_gen raised on attempt 1  (retry scheduled)" in out

    assert cli.main(["status", str(job.job_id), "--attempts", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(a["attempt"], a["outcome"]) for a in data["attempts"][key]] == [(1, "failed"), (2, "done")]
    assert data["attempts"][str(job.job_id)] == []


def test_a_new_claim_closes_the_attempt_of_a_worker_that_died_unnoticed(engine, variant, tmp_path,
                                                                        monkeypatch) -> None:
    _job, key = variant
    monkeypatch.setitem(handlers.HANDLERS, STAGE, _writes_marker([]))
    ctx = _ctx(engine, key, tmp_path, origin="dagster-run:dead", faults=f"{STAGE}:sleep=3")
    thread, errors = _start_in_background(engine, key, ctx)
    _end_lock_session(engine, key)

    execute_stage(STAGE, _ctx(engine, key, tmp_path, origin="dagster-run:new"))  # before recovery looked
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], claims.AttemptSuperseded)
    attempts = _attempts(engine, key)
    assert [(a["run_id"], a["outcome"]) for a in attempts] == [("dead", "lost"), ("new", "done")]
    assert attempts[0]["error"] == "worker lost: its partition was claimed again by run new"
    assert (_row(engine, key)["status"], _row(engine, key)["run_id"]) == ("done", "new")


def test_a_frozen_worker_loses_its_partition_lock_and_a_live_one_keeps_it(engine, db_url, variant) -> None:
    """A worker that is SIGSTOPped (a paused VM, a host swapping to a halt) keeps its sockets, and
    the kernel answers keepalives for it: only the lock's idle timeout frees its partition. A
    running worker keeps the lock past that timeout, through its heartbeat."""
    import os
    import signal
    import subprocess
    import sys

    _job, key = variant
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from variant_pipeline.data.engine import make_engine\n"
         "from variant_pipeline.data.locks import PartitionLock\n"
         "lock = PartitionLock(make_engine(sys.argv[1]), sys.argv[2], timeout_s=2.0)\n"
         "assert lock.try_acquire()\n"
         "print('locked', flush=True)\n"
         "time.sleep(120)\n", db_url, key],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"

        def free() -> bool:
            with engine.begin() as conn:
                return locks.is_lock_free(conn, locks.lock_key(key))

        time.sleep(5)  # well past its 2 s timeout: the heartbeat keeps a live holder's lock
        assert not free()
        os.kill(holder.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        _wait_for(free, timeout_s=15)
        freed_after = time.monotonic() - stopped
        assert freed_after >= 1.0  # not before its timeout
        os.kill(holder.pid, signal.SIGCONT)
    finally:
        holder.kill()
        holder.wait()
