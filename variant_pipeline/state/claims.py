"""Claims, the fence and the attempt records: the row writes of the state machine.

Under the partition lock (``locks.PartitionLock``, held for the whole stage):

- **The claim** moves the row to ``(stage, running)`` for a new attempt and records it.
- **The fence**: the partition row names the attempt in progress (``attempt``, ``run_id``). A
  worker writes its outputs and ``done`` only if the row still names its own attempt, in one
  transaction under the lock; a worker that lost its session and was replaced writes nothing.
- **Attempts**: every try is a ``stage_attempts`` row (when, which run, which process, outcome,
  error). A failed try is retried with backoff while attempts remain, by the recovery sensor; the
  last one leaves the row ``failed`` with its reason. Bad input is not retried.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from variant_pipeline import stages as stage_graph
from variant_pipeline.data import partition_state as rows
from variant_pipeline.data.engine import Connection
from variant_pipeline.data.locks import ClaimRefused
from variant_pipeline.stages import Level, Outcome, Status
from variant_pipeline.state.retry import RetryPolicy, after_failure


class AttemptSuperseded(ClaimRefused):
    """The partition moved on to another attempt while this one ran; its results were discarded."""


class PartitionMissing(LookupError):
    """The variant or job does not exist."""


@dataclass(frozen=True)
class Claim:
    attempt_id: int
    level: str
    partition_key: str
    job_id: str
    stage: str
    attempt: int
    run_id: str
    creation_order: int | None  # variants only


def claim(conn: Connection, *, stage: str, partition_key: str, run_id: str, origin: str,
          continues_attempts: bool) -> Claim:
    """Mark the partition ``(stage, running)`` for a new attempt; call inside a transaction under the lock.

    ``continues_attempts`` is set by automatic retries: they count on from the row's last attempt
    at this stage. Any other run (the outbox sensor's, a hand-started one, a manual retry) starts
    a new round at attempt 1.
    """
    level = stage_graph.stage(stage).level
    row = rows.read_row(conn, level, partition_key, lock=True)
    if row is None:
        raise PartitionMissing(f"{level} {partition_key} does not exist")
    attempt = next_attempt(row["current_step"], row["attempt"], stage, continues_attempts=continues_attempts)
    job_id = str(row["job_id"])
    if level == Level.VARIANT:
        rows.reopen_job(conn, job_id, stage)
    attempt_id = rows.claim(conn, level=level, partition_key=partition_key, job_id=job_id, stage=stage,
                            attempt=attempt, run_id=run_id, origin=origin)
    return Claim(attempt_id, level, partition_key, job_id, stage, attempt, run_id, row["creation_order"])


def next_attempt(row_stage: str, row_attempt: int, stage: str, *, continues_attempts: bool) -> int:
    """The number of a new attempt at ``stage`` on a row last at ``row_stage`` after ``row_attempt``:
    an automatic retry counts on at the same stage; anything else starts a round at 1."""
    return row_attempt + 1 if continues_attempts and row_stage == stage else 1


def _fenced_by(row: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
    """What the fence compares: the row's stage, status, attempt and run."""
    return None if row is None else (row["current_step"], row["status"], row["attempt"], row["run_id"])


def is_current(row: Mapping[str, Any] | None, claim_: Claim) -> bool:
    """The fence: whether the row still names this claim's attempt as running."""
    return _fenced_by(row) == (claim_.stage, Status.RUNNING, claim_.attempt, claim_.run_id)


def record_skipped(conn: Connection, *, stage: str, partition_key: str, run_id: str, origin: str,
                   reason: str) -> None:
    """Record that run ``run_id`` found ``stage`` not asked for and did nothing (a stale run).

    Shown by ``status --attempts`` beside the real attempts; it is no attempt at the stage: it
    wrote nothing, and no retry counts it.
    """
    rows.record_skipped(conn, level=stage_graph.stage(stage).level, stage=stage, partition_key=partition_key,
                        run_id=run_id, origin=origin, reason=reason)


def running_attempt(conn: Connection, level: str, partition_key: str) -> Claim | None:
    """The attempt the row says is running now (row locked), or None."""
    row = rows.read_row(conn, level, partition_key, lock=True)
    if row is None or row["status"] != Status.RUNNING:
        return None
    found = rows.open_attempt(conn, partition_key, row["current_step"])
    if found is None or found.attempt != row["attempt"]:
        return None
    return Claim(found.attempt_id, level, partition_key, str(row["job_id"]), row["current_step"], row["attempt"],
                 row["run_id"], row["creation_order"])


def check_fence(conn: Connection, claim_: Claim) -> None:
    """Raise ``AttemptSuperseded`` unless the row still names this attempt as running; locks the row."""
    row = rows.read_row(conn, claim_.level, claim_.partition_key, lock=True)
    if not is_current(row, claim_):
        raise AttemptSuperseded(
            f"{claim_.stage} attempt {claim_.attempt} of run {claim_.run_id} was superseded "
            f"(the row is now {_fenced_by(row)}); its results were discarded"
        )


def mark_done(conn: Connection, claim_: Claim) -> None:
    rows.complete(conn, claim_.level, claim_.partition_key, claim_.attempt_id)


def mark_superseded(conn: Connection, claim_: Claim, reason: str) -> None:
    rows.end_attempt(conn, claim_.attempt_id, Outcome.SUPERSEDED, reason, None)


def mark_failed(conn: Connection, *, level: str, partition_key: str, stage: str, attempt: int,
                attempt_id: int | None, reason: str, retryable: bool, policy: RetryPolicy,
                outcome: Outcome = Outcome.FAILED) -> bool:
    """Record a failed (or lost) attempt; schedule the next one or fail the row. Returns will_retry."""
    decided = after_failure(policy, attempt, reason, retryable=retryable, outcome=outcome)
    if decided.will_retry:
        rows.schedule_retry(conn, level, partition_key, stage, decided.message, timedelta(seconds=decided.delay_s))
    else:
        rows.fail(conn, level, partition_key, stage, decided.message)
    if attempt_id is not None:  # None: the row was set running by hand, with no attempt behind it
        rows.end_attempt(conn, attempt_id, outcome, reason, decided.will_retry)
    return decided.will_retry
