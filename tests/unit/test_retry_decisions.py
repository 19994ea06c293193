"""The claim's and the retry's decisions, as pure functions: no database, no clock."""

from __future__ import annotations

import pytest

from variant_pipeline.stages import Status
from variant_pipeline.state.claims import Claim, is_current, next_attempt
from variant_pipeline.state.retry import RetryPolicy, after_failure

POLICY = RetryPolicy(max_attempts=3, backoff_s=30)


@pytest.mark.parametrize(("row_stage", "row_attempt", "continues", "expected"), [
    ("overlay", 2, True, 3),  # an automatic retry counts on
    ("overlay", 2, False, 1),  # a person's retry, a hand run, a new request: a new round
    ("planner", 2, True, 1),  # the row moved to another stage: that stage's first attempt
    ("overlay", 0, True, 1),
])
def test_next_attempt(row_stage: str, row_attempt: int, continues: bool, expected: int) -> None:
    assert next_attempt(row_stage, row_attempt, "overlay", continues_attempts=continues) == expected


def test_failures_back_off_doubling_until_the_last_attempt_fails_the_row() -> None:
    first = after_failure(POLICY, 1, "boom", retryable=True)
    second = after_failure(POLICY, 2, "boom", retryable=True)
    last = after_failure(POLICY, 3, "boom", retryable=True)
    assert (first.will_retry, first.delay_s, first.message) == (
        True, 30, "attempt 1 of 3 failed: boom (retrying in 30 s)")
    assert (second.will_retry, second.delay_s) == (True, 60)
    assert (last.will_retry, last.delay_s, last.message) == (False, 0.0, "failed after 3 attempts: boom")


def test_a_lost_attempt_is_retried_at_once_but_still_counts() -> None:
    lost = after_failure(POLICY, 1, "worker gone", retryable=True, outcome="lost")
    assert (lost.will_retry, lost.delay_s, lost.message) == (
        True, 0.0, "attempt 1 of 3 failed: worker gone (retrying now)")
    assert not after_failure(POLICY, 3, "worker gone", retryable=True, outcome="lost").will_retry


def test_bad_input_fails_at_once_with_its_reason_alone() -> None:
    bad = after_failure(POLICY, 1, "StageInputError: no image", retryable=False)
    assert (bad.will_retry, bad.message) == (False, "StageInputError: no image")


def test_the_fence_holds_only_for_the_attempt_the_row_names() -> None:
    claim = Claim(attempt_id=7, level="variant", partition_key="v", job_id="j", stage="overlay", attempt=2,
                  run_id="run-a", creation_order=1)
    row = {"current_step": "overlay", "status": Status.RUNNING, "attempt": 2, "run_id": "run-a"}
    assert is_current(row, claim)
    assert not is_current(None, claim)  # the row is gone
    assert not is_current({**row, "run_id": "run-b"}, claim)  # another run took the partition
    assert not is_current({**row, "attempt": 3}, claim)  # a later attempt
    assert not is_current({**row, "status": "queued"}, claim)  # recovery marked it lost and requeued it
    assert not is_current({**row, "current_step": "planner"}, claim)
