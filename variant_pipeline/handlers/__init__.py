"""Running one stage for one partition: lock, claim, work, write, done (or failed, with the reason).

This is the whole state protocol, without Dagster: the assets call ``execute_stage`` and add
only metadata. Every write carries the caller's origin (the Dagster run id) into the outbox.
The lock, the fence and the attempt records are in ``variant_pipeline/claims.py``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

from variant_pipeline import claims
from variant_pipeline import stages as stage_graph
from variant_pipeline.config import Settings
from variant_pipeline.faults import inject, parse_faults
from variant_pipeline.handlers import (
    ad_copy_gen_kor,
    img_gen,
    instagram_feed_gen,
    iou_eval,
    ocr_eval,
    overlay,
    planner,
    readability_eval,
    vlm_analyze,
    vlm_judge,
    yolo_detect,
)
from variant_pipeline.handlers.base import HandlerContext, StageInputError, StageOutcome

Handler = Callable[[HandlerContext], StageOutcome]

# One module per stage, named after it (handlers/<stage>.py), each with ``run``.
HANDLERS: dict[str, Handler] = {
    "img_gen": img_gen.run,
    "vlm_analyze": vlm_analyze.run,
    "yolo_detect": yolo_detect.run,
    "planner": planner.run,
    "overlay": overlay.run,
    "vlm_judge": vlm_judge.run,
    "ocr_eval": ocr_eval.run,
    "readability_eval": readability_eval.run,
    "iou_eval": iou_eval.run,
    "ad_copy_gen_kor": ad_copy_gen_kor.run,
    "instagram_feed_gen": instagram_feed_gen.run,
}
_unmatched = set(stage_graph.STAGE_NAMES) ^ set(HANDLERS)
if _unmatched:  # the stage graph and the handlers must name the same stages
    raise RuntimeError(f"stages without a handler (or handlers without a stage): {sorted(_unmatched)}")

MAX_ERROR_CHARS = 2000


class StageFailed(RuntimeError):
    """The stage failed; the reason is stored on the variant/job row as well."""

    def __init__(self, stage: str, partition_key: str, reason: str, *, will_retry: bool = False) -> None:
        retry_note = " (another attempt is scheduled)" if will_retry else ""
        super().__init__(f"{stage} failed for {partition_key}: {reason}{retry_note}")
        self.stage = stage
        self.partition_key = partition_key
        self.reason = reason
        self.will_retry = will_retry


class StageTimeout(TimeoutError):
    """The stage ran past its time limit (it is retried like any transient failure)."""


def stage_timeout_s(settings: Settings, stage_name: str) -> float:
    return settings.stage_timeouts.get(stage_name, settings.stage_timeout_s)


def _run_with_timeout(work: Callable[[], StageOutcome], timeout_s: float, name: str) -> StageOutcome:
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


def retry_policy(settings: Settings) -> claims.RetryPolicy:
    return claims.RetryPolicy(max_attempts=settings.max_attempts, backoff_s=settings.retry_backoff_s)


def execute_stage(stage_name: str, ctx: HandlerContext) -> StageOutcome:
    """Run one stage for one partition under its lock, as one recorded attempt.

    Raises ``StageFailed`` when the stage failed (its reason stored, a retry scheduled if it may
    be retried), and ``ClaimRefused`` when this worker may not run it (another worker holds the
    partition, or the attempt was superseded): then nothing of this attempt was written.
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
    lock = claims.PartitionLock(ctx.engine, key)
    if not lock.try_acquire():
        raise claims.PartitionBusy(f"{stage.level} {key} is being worked on by another run; {stage.name} not started")
    try:
        try:
            conn = lock.connection()
            with conn.begin():
                claims.set_origin(conn, ctx.origin)
                claim = claims.claim(conn, stage=stage.name, partition_key=key, run_id=run_id,
                                     origin=ctx.origin, continues_attempts=ctx.continues_attempts)
        except claims.PartitionMissing as exc:
            raise StageFailed(stage.name, key, str(exc)) from exc
        ctx.log(f"{stage.name} attempt {claim.attempt} for {stage.level} {key}")

        def work() -> StageOutcome:
            inject(faults, stage.name, claim.attempt, claim.creation_order)
            return HANDLERS[stage.name](ctx)

        try:
            outcome = _run_with_timeout(work, stage_timeout_s(ctx.settings, stage.name), stage.name)
        except Exception as exc:
            _record_failure(lock, ctx, claim, exc, policy)
        conn = lock.connection()
        try:
            with conn.begin():
                claims.set_origin(conn, ctx.origin)
                claims.check_fence(conn, claim)
                outcome.write(conn)
                claims.mark_done(conn, claim)
            outcome.metadata.setdefault("attempt", claim.attempt)
        except claims.AttemptSuperseded as exc:
            with conn.begin():
                claims.mark_superseded(conn, claim, str(exc))
            raise
        except Exception as exc:  # the write itself failed (a constraint, a lost server)
            _record_failure(lock, ctx, claim, exc, policy)
        return outcome
    finally:
        lock.release()


def record_cancellation(stage_name: str, ctx: HandlerContext, reason: str) -> bool:
    """Fail this run's interrupted attempt for good: a run cancelled by a person is not retried.

    Called after ``execute_stage`` was interrupted (it released the lock on the way out). Returns
    False when the row no longer names this run's attempt, or another worker holds the partition.
    """
    stage = stage_graph.stage(stage_name)
    lock = claims.PartitionLock(ctx.engine, ctx.partition_key)
    if not lock.try_acquire():
        return False
    try:
        conn = lock.connection()
        with conn.begin():
            claims.set_origin(conn, ctx.origin)
            current = claims.running_attempt(conn, stage.level, ctx.partition_key)
            if current is None or current.stage != stage.name or current.run_id != (ctx.run_id or ctx.origin):
                return False
            claims.mark_failed(conn, level=stage.level, partition_key=ctx.partition_key, stage=stage.name,
                               attempt=current.attempt, attempt_id=current.attempt_id, reason=reason,
                               retryable=False, policy=retry_policy(ctx.settings))
            return True
    finally:
        lock.release()


def _record_failure(lock: claims.PartitionLock, ctx: HandlerContext, claim: claims.Claim,
                    exc: Exception, policy: claims.RetryPolicy) -> NoReturn:
    """Store the failed attempt (and the retry, if one remains), then raise ``StageFailed``."""
    reason = _reason(exc)
    retryable = not isinstance(exc, StageInputError)
    will_retry = False
    try:
        conn = lock.connection()
        with conn.begin():
            claims.set_origin(conn, ctx.origin)
            claims.check_fence(conn, claim)
            will_retry = claims.mark_failed(
                conn, level=claim.level, partition_key=claim.partition_key, stage=claim.stage,
                attempt=claim.attempt, attempt_id=claim.attempt_id, reason=reason,
                retryable=retryable, policy=policy)
    except claims.AttemptSuperseded as superseded:
        with conn.begin():
            claims.mark_superseded(conn, claim, str(superseded))
        raise superseded from exc
    except Exception as mark_exc:  # the database itself may be what failed; recovery will see the row
        ctx.log(f"could not record the failure of {claim.stage} for {claim.partition_key}: {mark_exc}")
        will_retry = retryable
    raise StageFailed(claim.stage, claim.partition_key, reason, will_retry=will_retry) from exc


__all__ = ["HANDLERS", "HandlerContext", "StageFailed", "StageInputError", "StageOutcome", "StageTimeout",
           "execute_stage", "record_cancellation"]
