"""The attempt protocol: one stage for one partition, run as one recorded attempt under its lock.

    take the partition lock (else PartitionBusy: nothing written)
    a run the pipeline launched: is the stage still asked for?   (else RunIsStale: a 'skipped' record)
    claim: (stage, running), a new stage_attempts row            one transaction
    the stage's handler, under the stage's time limit            no transaction held
    its outputs + (stage, done), if the row still names us      one fenced transaction
    or, on failure: (stage, queued) + retry_at while attempts remain, else (stage, failed)

The handler is passed in by the caller (``handlers.execute_stage``): this module runs no stage
work and knows no orchestrator. Every write carries the caller's origin into the outbox.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, Protocol, TypeVar

from variant_pipeline import stages as stage_graph
from variant_pipeline.config import Settings
from variant_pipeline.data import partition_state as rows
from variant_pipeline.data.engine import Connection, Engine, set_origin, transaction
from variant_pipeline.data.locks import ClaimRefused, PartitionBusy, PartitionLock
from variant_pipeline.faults import inject, parse_faults
from variant_pipeline.state import claims
from variant_pipeline.state.retry import RetryPolicy, retry_policy
from variant_pipeline.state.transitions import stale_reason

MAX_ERROR_CHARS = 2000
# How long a run the pipeline launched waits for a partition lock someone else holds before it
# concludes that another run is carrying the partition. Prune and recovery hold it for moments.
LAUNCHED_RUN_LOCK_WAIT_S = 10.0


class AttemptContext(Protocol):
    """What the protocol needs of its caller's context (``handlers.HandlerContext`` has all of it)."""

    engine: Engine
    settings: Settings
    origin: str  # recorded on every outbox event the attempt's writes cause
    partition_key: str  # job_variants_id or job_id
    log: Callable[[str], None]
    run_id: str | None  # the Dagster run; None outside Dagster (the origin names the caller)
    continues_attempts: bool  # automatic retries count on from the last attempt
    launched: bool  # a run the pipeline launched for a state (not a person's): it may be stale


class Outcome(Protocol):
    """What a handler returns: its writes (run in the transaction that marks the stage done)."""

    write: Callable[[Connection], None]
    metadata: dict[str, Any]


ContextT = TypeVar("ContextT", bound=AttemptContext)
OutcomeT = TypeVar("OutcomeT", bound=Outcome)


class StageInputError(ValueError):
    """A stage cannot run because an input is missing or unusable (the message says which).

    Another attempt would not change the answer: the stage fails at once, without retries.
    """


class StageFailed(RuntimeError):
    """The stage failed; the reason is stored on the variant/job row as well."""

    def __init__(self, stage: str, partition_key: str, reason: str, *, will_retry: bool = False) -> None:
        retry_note = " (another attempt is scheduled)" if will_retry else ""
        super().__init__(f"{stage} failed for {partition_key}: {reason}{retry_note}")
        self.stage = stage
        self.partition_key = partition_key
        self.reason = reason
        self.will_retry = will_retry


class RunIsStale(RuntimeError):
    """A run the pipeline launched found its stage no longer asked for (the partition moved on, or
    another run carries it); it did nothing, and recorded that as a 'skipped' attempt row."""


class StageTimeout(TimeoutError):
    """The stage ran past its time limit (it is retried like any transient failure)."""


def stage_timeout_s(settings: Settings, stage_name: str) -> float:
    return settings.stage_timeouts.get(stage_name, settings.stage_timeout_s)


def execute_stage(stage_name: str, ctx: ContextT, handler: Callable[[ContextT], OutcomeT]) -> OutcomeT:
    """Run ``handler(ctx)`` as one attempt at ``stage_name`` for ``ctx.partition_key``, under its lock.

    Raises ``StageFailed`` when the stage failed (its reason stored, a retry scheduled if it may
    be retried), ``ClaimRefused`` when this worker may not run it (another worker holds the
    partition, or the attempt was superseded), and ``RunIsStale`` when a launched run finds the
    stage no longer asked for: in those two cases nothing of this attempt was written.
    """
    stage = stage_graph.stage(stage_name)
    key = ctx.partition_key
    try:
        uuid.UUID(key)
    except ValueError:
        raise StageFailed(stage.name, key, f"bad partition key {key!r}: expected a UUID") from None
    run_id = ctx.run_id or ctx.origin
    policy = retry_policy(ctx.settings)
    faults = parse_faults(ctx.settings.faults)  # before the claim: a bad spec must not strand the row
    lock = PartitionLock(ctx.engine, key, ctx.settings.lease_timeout_s)
    if not _acquire(lock, LAUNCHED_RUN_LOCK_WAIT_S if ctx.launched else 0.0):
        if ctx.launched:
            _skip(ctx, stage.name, run_id, f"another run holds the {stage.level}'s lock")
        raise PartitionBusy(f"{stage.level} {key} is being worked on by another run; {stage.name} not started")
    try:
        stale: str | None = None
        try:
            with _locked(lock, ctx.origin) as conn:
                if ctx.launched:
                    stale = _stale_reason(conn, stage.name, key, ctx.continues_attempts)
                if stale is None:
                    claim = claims.claim(conn, stage=stage.name, partition_key=key, run_id=run_id,
                                         origin=ctx.origin, continues_attempts=ctx.continues_attempts)
        except claims.PartitionMissing as exc:
            raise StageFailed(stage.name, key, str(exc)) from exc
        if stale is not None:
            _skip(ctx, stage.name, run_id, stale, lock=lock)
        ctx.log(f"{stage.name} attempt {claim.attempt} for {stage.level} {key}")

        def work() -> OutcomeT:
            inject(faults, stage.name, claim.attempt, claim.creation_order)
            return handler(ctx)

        try:
            outcome = _run_with_timeout(work, stage_timeout_s(ctx.settings, stage.name), stage.name)
        except Exception as exc:
            _record_failure(lock, ctx, claim, exc, policy)
        try:
            with _locked(lock, ctx.origin, fenced=claim) as conn:
                outcome.write(conn)
                claims.mark_done(conn, claim)
        except ClaimRefused:  # superseded, or the lock was lost to another worker: nothing written
            raise
        except Exception as exc:  # the write itself failed (a constraint, a lost server)
            _record_failure(lock, ctx, claim, exc, policy)
        outcome.metadata.setdefault("attempt", claim.attempt)
        return outcome
    finally:
        lock.release()


def _acquire(lock: PartitionLock, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while not lock.try_acquire():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)
    return True


def _stale_reason(conn: Connection, stage_name: str, key: str, continues_attempts: bool) -> str | None:
    """Why the row (locked) does not ask a launched run for ``stage_name`` now, or None."""
    level = stage_graph.stage(stage_name).level
    row = rows.read_row(conn, level, key, lock=True)
    if row is None:
        return None  # the claim reports the missing partition
    return stale_reason(level, row["current_step"], row["status"], retry_pending=row["retry_at"] is not None,
                        stage=stage_name, continues_attempts=continues_attempts)


def _skip(ctx: AttemptContext, stage_name: str, run_id: str, reason: str,
          lock: PartitionLock | None = None) -> NoReturn:
    """Record that this launched run did nothing at ``stage_name``, then raise ``RunIsStale``."""
    message = f"stale run: {reason}; {stage_name} not run, nothing written"
    ctx.log(f"{stage_name} for {ctx.partition_key}: {message}")
    try:
        if lock is None:
            with transaction(ctx.engine, ctx.origin) as own:
                claims.record_skipped(own, stage=stage_name, partition_key=ctx.partition_key, run_id=run_id,
                                      origin=ctx.origin, reason=message)
        else:
            with _locked(lock, ctx.origin) as locked:
                claims.record_skipped(locked, stage=stage_name, partition_key=ctx.partition_key, run_id=run_id,
                                      origin=ctx.origin, reason=message)
    except Exception as exc:  # the record is for people; doing nothing is what matters
        ctx.log(f"could not record the skipped {stage_name} for {ctx.partition_key}: {exc}")
    raise RunIsStale(message)


def record_cancellation(stage_name: str, ctx: AttemptContext, reason: str) -> bool:
    """Fail this run's interrupted attempt for good: a run cancelled by a person is not retried.

    Called after ``execute_stage`` was interrupted (it released the lock on the way out). Returns
    False when the row no longer names this run's attempt, or another worker holds the partition.
    """
    stage = stage_graph.stage(stage_name)
    lock = PartitionLock(ctx.engine, ctx.partition_key, ctx.settings.lease_timeout_s)
    if not lock.try_acquire():
        return False
    try:
        with _locked(lock, ctx.origin) as conn:
            current = claims.running_attempt(conn, stage.level, ctx.partition_key)
            if current is None or current.stage != stage.name or current.run_id != (ctx.run_id or ctx.origin):
                return False
            claims.mark_failed(conn, level=stage.level, partition_key=ctx.partition_key, stage=stage.name,
                               attempt=current.attempt, attempt_id=current.attempt_id, reason=reason,
                               retryable=False, policy=retry_policy(ctx.settings))
            return True
    finally:
        lock.release()


@contextmanager
def _locked(lock: PartitionLock, origin: str, fenced: claims.Claim | None = None) -> Iterator[Connection]:
    """One transaction on the partition lock's connection, its writes recorded with ``origin``.

    ``PartitionBusy`` if the lock was lost and another worker holds it now. With ``fenced``, only
    while the row still names that attempt: otherwise the attempt is recorded ``superseded`` and
    ``AttemptSuperseded`` raised, with nothing of it written.
    """
    with lock.connection() as conn:
        try:
            with conn.begin():
                set_origin(conn, origin)
                if fenced is not None:
                    claims.check_fence(conn, fenced)
                yield conn
        except claims.AttemptSuperseded as exc:
            if fenced is not None:
                with conn.begin():
                    claims.mark_superseded(conn, fenced, str(exc))
            raise


def _run_with_timeout(work: Callable[[], OutcomeT], timeout_s: float, name: str) -> OutcomeT:
    """Run ``work`` in a daemon thread and stop waiting after ``timeout_s``.

    Python cannot stop a thread stuck in native code; the abandoned thread can no longer write
    anything (writes happen here, after it returns, under the fence) and dies with its run
    worker, which exits when the failed run ends.
    """
    result: dict[str, Any] = {}
    finished = threading.Event()

    def target() -> None:
        try:
            result["outcome"] = work()
        except BaseException as exc:  # handed to the waiting thread as is
            result["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=target, name=f"stage-{name}", daemon=True).start()
    if not finished.wait(timeout_s):
        raise StageTimeout(f"{name} did not finish within its time limit of {timeout_s:g} s")
    if "error" in result:
        raise result["error"]
    return result["outcome"]


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\x00", "\ufffd")[:MAX_ERROR_CHARS]


def _record_failure(lock: PartitionLock, ctx: AttemptContext, claim: claims.Claim,
                    exc: Exception, policy: RetryPolicy) -> NoReturn:
    """Store the failed attempt (and the retry, if one remains), then raise ``StageFailed``."""
    reason = _reason(exc)
    retryable = not isinstance(exc, StageInputError)
    will_retry = False
    try:
        with _locked(lock, ctx.origin, fenced=claim) as conn:
            will_retry = claims.mark_failed(
                conn, level=claim.level, partition_key=claim.partition_key, stage=claim.stage,
                attempt=claim.attempt, attempt_id=claim.attempt_id, reason=reason,
                retryable=retryable, policy=policy)
    except claims.AttemptSuperseded as superseded:
        raise superseded from exc
    except Exception as mark_exc:  # the database itself may be what failed; recovery will see the row
        ctx.log(f"could not record the failure of {claim.stage} for {claim.partition_key}: {mark_exc}")
        will_retry = retryable
    raise StageFailed(claim.stage, claim.partition_key, reason, will_retry=will_retry) from exc
