"""What recovery restarts, decided by ``plan_restarts`` over rows as the data layer reads them,
with the clock passed in: the stall rule, retries due or backing off, orphans of failed runs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from variant_pipeline.state.recovery import MAX_FAST_RESTARTS, FailedRun, Restart, plan_restarts

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _row(key: str = "v1", *, level: str = "variant", stage: str = "planner", status: str = "done",
         updated: float = 0.0, retry_at: float | None = None) -> dict:
    """A waiting row, ``updated`` (and ``retry_at``) seconds after T0."""
    return {"level": level, "key": key, "job_id": "j1", "current_step": stage, "status": status, "attempt": 1,
            "run_id": "r1", "updated_at": T0 + timedelta(seconds=updated),
            "retry_at": None if retry_at is None else T0 + timedelta(seconds=retry_at)}


def _plan(rows: list[dict], at: float, stall_after_s: float = 300, busy_partitions: Iterable[str] = (),
          **kwargs: Any) -> list[Restart]:
    return plan_restarts(rows, now=T0 + timedelta(seconds=at), stall_after_s=stall_after_s,
                         busy_partitions=busy_partitions, **kwargs)


def test_a_row_waiting_less_than_the_stall_period_is_left_alone_and_one_past_it_restarts_at_its_next_stage() -> None:
    assert _plan([_row()], at=299.9) == []
    [restart] = _plan([_row()], at=300)
    assert (restart.why, restart.start_stage, restart.continues_attempts) == ("stalled", "overlay", False)
    assert restart.state == ("planner", "done")


def test_each_stall_period_gets_its_own_run_key_so_a_lost_restart_is_tried_again_once_a_period() -> None:
    keys = [_plan([_row()], at=at)[0].run_key for at in (300, 450, 600, 601)]
    assert keys[0] == keys[1] != keys[2] == keys[3]


def test_a_retry_backing_off_waits_and_a_due_one_restarts_counting_on_named_by_its_last_attempt() -> None:
    row = _row(status="queued", stage="overlay", retry_at=30)
    assert _plan([row], at=29) == []
    [retry] = _plan([row], at=30, last_attempts={("v1", "overlay"): (41, "run-a")})
    assert (retry.why, retry.start_stage, retry.continues_attempts, retry.retries_run) == (
        "retry", "overlay", True, "run-a")
    assert ":after-attempt:41:" in retry.run_key


def test_a_due_retry_nobody_picked_up_for_a_stall_period_restarts_as_a_stall() -> None:
    [restart] = _plan([_row(status="queued", stage="overlay", retry_at=30)], at=330)
    assert (restart.why, restart.continues_attempts) == ("stalled", True)


def test_partitions_with_a_run_in_flight_are_skipped() -> None:
    rows = [_row("v1"), _row("v2")]
    assert [r.partition_key for r in _plan(rows, at=400, busy_partitions={"v1"})] == ["v2"]


def test_a_variant_done_with_its_last_stage_is_not_restarted() -> None:
    assert _plan([_row(stage="iou_eval")], at=10_000) == []


def test_the_orphan_of_a_failed_run_restarts_at_once_until_the_chain_is_too_long() -> None:
    def failed(ended: float, chain: int = 0):
        return lambda keys: {k: FailedRun("run-x", T0 + timedelta(seconds=ended), chain) for k in keys}

    [restart] = _plan([_row(updated=10)], at=11, failed_runs=failed(ended=10.5))
    assert (restart.why, restart.retries_run, restart.chain) == ("run_failed", "run-x", 1)
    # A run that failed before the row last changed was not carrying it.
    assert _plan([_row(updated=10)], at=11, failed_runs=failed(ended=9)) == []
    # After MAX_FAST_RESTARTS in a row, the stall rule decides.
    assert _plan([_row(updated=10)], at=11, failed_runs=failed(ended=10.5, chain=MAX_FAST_RESTARTS)) == []


def test_a_job_whose_variants_all_finished_restarts_at_its_first_job_stage() -> None:
    [restart] = _plan([_row("j1", level="job", stage="iou_eval", status="done")], at=300)
    assert (restart.level, restart.start_stage) == ("job", "ad_copy_gen_kor")
