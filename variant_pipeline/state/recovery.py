"""Finding work that stopped, and deciding where it restarts: the database side of recovery.

The recovery sensor (sensors/recovery.py) calls these on every tick; the CLI's ``retry`` uses
``request_retry``. Where a row restarts is the transition rule (``transitions.restart_stage``).

Three kinds of stopped work:

- **lost claims**: a row says ``(stage, running)`` but nobody holds its partition lock, so the
  worker that claimed it is gone. The attempt is recorded as ``lost`` and counts like a failure:
  retried with backoff while attempts remain, else the row fails with the reason.
- **due retries**: ``(stage, queued)`` with ``retry_at`` in the past.
- **orphans of a failed run**: a row waiting for its next stage (or a due retry) whose latest run
  failed after the row last changed, with no run in flight: the run that was carrying it died
  between stages or before its first one (a killed worker, a lost database, a launch that failed).
  Nothing else will move it, so it restarts at once instead of waiting out the stall rule; a
  chain of such restarts is cut after ``MAX_FAST_RESTARTS``, and the stall rule takes over.
- **stalls**: a row that waits for its next stage (``done`` before the last stage, a job whose
  variants all finished, or ``queued``) and has not changed for ``stall_after_s``, with no run
  in flight for it: a run request that was lost, a run cancelled by hand, a launch that failed.
  A due retry that no run picked up for ``stall_after_s`` after its ``retry_at`` is one too; a
  retry still backing off is neither.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from variant_pipeline import stages as stage_graph
from variant_pipeline.data import partition_state as rows
from variant_pipeline.data.engine import Connection, Engine, transaction
from variant_pipeline.data.locks import is_lock_free, lock_key
from variant_pipeline.stages import Level, Outcome, Status
from variant_pipeline.state import claims
from variant_pipeline.state.origins import MANUAL_RETRY_ORIGIN, RECOVERY_ORIGIN
from variant_pipeline.state.retry import RetryPolicy
from variant_pipeline.state.transitions import restart_stage


@dataclass(frozen=True)
class LostClaim:
    level: str
    partition_key: str
    stage: str
    attempt: int
    run_id: str | None
    worker: str | None
    will_retry: bool


# Restarts of orphans in a row (each from a run that failed again) before the stall rule decides.
MAX_FAST_RESTARTS = 3


@dataclass(frozen=True)
class Restart:
    level: str
    partition_key: str
    start_stage: str
    why: str  # "retry" | "run_failed" | "stalled"
    run_key: str
    continues_attempts: bool  # automatic retries count on; stalls restart a stage afresh
    state: tuple[str, str] = ("", "")  # the row's (stage, status) when it was found
    retries_run: str | None = None  # for retries and run_failed: the run that failed
    chain: int = 0  # for run_failed: how many fast restarts in a row this one is


@dataclass(frozen=True)
class FailedRun:
    """A partition's latest run, which failed: when it ended, and how many fast restarts led to it."""

    run_id: str
    ended_at: datetime
    chain: int = 0


# Given partition keys, each one's latest run if it failed (the recovery sensor asks Dagster).
FailedRunLookup = Callable[[list[str]], Mapping[str, FailedRun]]


def recover_lost_claims(engine: Engine, policy: RetryPolicy) -> list[LostClaim]:
    """Turn every running row whose worker is gone into a recorded lost attempt (and a retry)."""
    with engine.connect() as conn:
        candidates = rows.running_rows(conn)
    lost: list[LostClaim] = []
    for row in candidates:
        with transaction(engine, RECOVERY_ORIGIN) as conn:
            if not is_lock_free(conn, lock_key(row["key"])):
                continue  # a live worker holds it
            now = rows.read_row(conn, row["level"], row["key"], lock=True)
            if now is None or (now["current_step"], now["status"], now["attempt"], now["run_id"]) != (
                    row["current_step"], Status.RUNNING, row["attempt"], row["run_id"]):
                continue  # it moved on meanwhile
            attempt = rows.open_attempt(conn, row["key"], row["current_step"])
            worker = attempt.worker if attempt else None
            reason = (f"worker lost: the process running {row['current_step']} "
                      f"({worker or 'unknown process'}, run {row['run_id'] or 'unknown'}) ended without finishing it")
            will_retry = claims.mark_failed(
                conn, level=row["level"], partition_key=row["key"], stage=row["current_step"],
                attempt=max(row["attempt"], 1), attempt_id=attempt.attempt_id if attempt else None,
                reason=reason, retryable=True, policy=policy, outcome=Outcome.LOST)
            lost.append(LostClaim(row["level"], row["key"], row["current_step"], row["attempt"], row["run_id"],
                                  worker, will_retry))
    return lost


def runs_cut_short(engine: Engine, run_ids: list[str]) -> set[str]:
    """Those of ``run_ids`` with an attempt still ``running``, or ended ``lost`` or ``superseded``:
    their worker stopped inside a stage. Such a run took its lease before its first stage, and
    was not finishing normally, so a free lease means its worker is gone, however young the run."""
    with engine.connect() as conn:
        return rows.runs_cut_short(conn, run_ids)


def find_restarts(engine: Engine, stall_after_s: float, busy_partitions: Iterable[str],
                  failed_runs: FailedRunLookup | None = None) -> list[Restart]:
    """Due retries, orphans of failed runs and stalled rows, minus partitions with a run in flight."""
    with engine.connect() as conn:
        now = rows.database_now(conn)
        waiting = rows.waiting_rows(conn, last_variant_stage=stage_graph.LAST_VARIANT_STAGE,
                                    last_job_stage=stage_graph.LAST_JOB_STAGE)
        last_attempts = rows.last_attempts(conn, [r["key"] for r in waiting if r["retry_at"] is not None])
    return plan_restarts(waiting, now=now, stall_after_s=stall_after_s, busy_partitions=busy_partitions,
                         failed_runs=failed_runs, last_attempts=last_attempts)


def plan_restarts(waiting: Iterable[Mapping[str, Any]], *, now: datetime, stall_after_s: float,
                  busy_partitions: Iterable[str], failed_runs: FailedRunLookup | None = None,
                  last_attempts: Mapping[tuple[str, str], tuple[int, str | None]] | None = None) -> list[Restart]:
    """Which of the ``waiting`` rows (``partition_state.waiting_rows``) restart at ``now``, and why.

    ``last_attempts`` maps (partition, stage) to the (attempt_id, run_id) of its latest attempt;
    a retry's run key is named by it. Pure: the clock and the runs are arguments.
    """
    busy = set(busy_partitions)
    last_attempts = last_attempts or {}
    candidates = [(r, start) for r in waiting if r["key"] not in busy
                  and (start := restart_stage(r["level"], r["current_step"], r["status"])) is not None
                  and (r["retry_at"] is None or r["retry_at"] <= now)]  # not backing off
    failed = failed_runs([r["key"] for r, _ in candidates]) if failed_runs and candidates else {}
    restarts: list[Restart] = []
    for row, start in candidates:
        orphaned = _orphan_restart(row, start, failed.get(row["key"]))
        if orphaned is not None:
            restarts.append(orphaned)
            continue
        if row["retry_at"] is not None:
            overdue = (now - row["retry_at"]).total_seconds()
            if stall_after_s <= 0 or overdue < stall_after_s:
                # Named by the last attempt and the time it became due: a retry made due again
                # (by ``request_retry``) after its run was cancelled gets a key not yet spent.
                after, failed_run = last_attempts.get((row["key"], row["current_step"]), (0, None))
                due = int(row["retry_at"].timestamp() * 1000)
                restarts.append(Restart(row["level"], row["key"], start, "retry",
                                        f"retry:{row['level']}:{row['key']}:{start}:after-attempt:{after}:{due}",
                                        continues_attempts=True, state=(row["current_step"], row["status"]),
                                        retries_run=failed_run))
                continue
            # Due for a stall period and still not picked up: the retry's run was lost, cancelled
            # or never launched (its run key is spent), so restart it as a stall.
            waited = overdue
        else:
            waited = (now - row["updated_at"]).total_seconds()
        if waited >= stall_after_s:
            # One restart per stall period: a restart whose run never got going is tried again
            # one period later, never in a tight loop.
            period = math.floor(waited / stall_after_s) if stall_after_s > 0 else 0
            stamp = int(row["updated_at"].timestamp() * 1000)
            restarts.append(Restart(row["level"], row["key"], start, "stalled",
                                    f"stalled:{row['level']}:{row['key']}:{start}:{stamp}:{period}",
                                    continues_attempts=row["retry_at"] is not None,
                                    state=(row["current_step"], row["status"])))
    return restarts


def _orphan_restart(row: Mapping[str, Any], start: str, failed: FailedRun | None) -> Restart | None:
    """A restart now if the partition's latest run failed after the row last changed (or after
    its retry fell due): that run was carrying it, and nothing else will."""
    if failed is None or failed.chain >= MAX_FAST_RESTARTS:
        return None
    since = max(row["updated_at"], row["retry_at"] or row["updated_at"])
    if failed.ended_at < since:
        return None  # the row changed after that run: someone else asked for this state
    return Restart(row["level"], row["key"], start, "run_failed",
                   f"run-failed:{row['level']}:{row['key']}:{start}:{failed.run_id}",
                   continues_attempts=row["retry_at"] is not None, state=(row["current_step"], row["status"]),
                   retries_run=failed.run_id, chain=failed.chain + 1)


def fail_cancelled(engine: Engine, restart: Restart, run_id: str) -> bool:
    """A partition stalled because a person cancelled its run before its next stage began: that
    stage fails with the reason (as a cancel inside a stage does), so the job can roll up and the
    person can ``retry`` it. Returns False if the row moved on meanwhile."""
    with transaction(engine, RECOVERY_ORIGIN) as conn:
        if not is_lock_free(conn, lock_key(restart.partition_key)):
            return False
        return rows.cancel(
            conn, restart.level, restart.partition_key, restart.start_stage,
            f"cancelled: run {run_id} was cancelled in Dagster before {restart.start_stage} started",
            found=restart.state)


# --- Manual retry ---------------------------------------------------------------------------


class RetryError(ValueError):
    """A retry that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class RetryRequest:
    level: str
    partition_key: str
    stage: str
    previous: tuple[str, str]


def request_retry(engine: Engine, target: str, from_stage: str | None = None,
                  origin: str = MANUAL_RETRY_ORIGIN) -> list[RetryRequest]:
    """Queue a variant or a job again, from ``from_stage`` or from where it failed.

    The rows go to ``(stage, queued)`` with a fresh attempt budget; the outbox sensor launches
    the runs, exactly as for a new job. A job retried from a variant stage retries all its
    variants (one that never got that far, from where it stopped); without ``--from``, a job
    retries its failed variants, or its failed job stage. A variant cannot be retried from a
    stage after the first one it has not finished.
    """
    if from_stage is not None and from_stage not in stage_graph.STAGES_BY_NAME:
        names = ", ".join(stage_graph.STAGE_NAMES)
        raise RetryError(f"unknown stage {from_stage!r}; stages are: {names}")
    with transaction(engine, origin) as conn:
        variant = rows.lock_variant(conn, target)
        job_id = variant.job_id if variant is not None else target
        # The job row after the variant's: the order prune and the rollup lock them in.
        job = rows.lock_job(conn, job_id)
        if job is None:
            raise RetryError(f"no variant or job with id {target}")
        _refuse_pruned(job_id, job.pruned_at, job.partitions_removed_at)
        if variant is not None:
            return [_retry_variant(conn, target, job_id, (variant.current_step, variant.status), from_stage)]
        return _retry_job(conn, target, (job.current_step, job.status), from_stage)


def _refuse_pruned(job_id: str, pruned_at: datetime | None, partitions_removed_at: datetime | None) -> None:
    # Prune deleted the job's files (the product photo and every stage's images) and its Dagster
    # partitions: no stage of it has its inputs any more, and reopening it would leave variants
    # that are live again without a partition. The partition budget removed the partitions only,
    # but the same holds for them: the outbox sensor would add back the retried variant's alone.
    if pruned_at is not None:
        raise RetryError(f"job {job_id} was pruned at {pruned_at:%Y-%m-%d %H:%M:%S %Z} (its images and "
                         "Dagster partitions are gone); submit it again instead")
    if partitions_removed_at is not None:
        raise RetryError(f"job {job_id}'s Dagster partitions were removed at "
                         f"{partitions_removed_at:%Y-%m-%d %H:%M:%S %Z} to keep the partition budget "
                         "(its rows and images stay); submit it again instead")


def _check_not_running(level: str, key: str, state: tuple[str, str]) -> None:
    if state[1] == Status.RUNNING:
        raise RetryError(f"{level} {key} is running {state[0]} now; retry it after it ends "
                         "(a stuck run is found by the recovery sensor)")


def _retry_variant(conn: Connection, key: str, job_id: str, state: tuple[str, str],
                   from_stage: str | None) -> RetryRequest:
    _check_not_running(Level.VARIANT, key, state)
    if from_stage is None:
        if state[1] != Status.FAILED:
            raise RetryError(f"variant {key} has not failed (it is at {state[0]}/{state[1]}); "
                             "give --from STAGE to redo stages")
        from_stage = state[0]
    if stage_graph.stage(from_stage).level != Level.VARIANT:
        raise RetryError(f"{from_stage} is a job-level stage; retry the job {job_id} --from {from_stage} instead")
    reached = _first_unfinished(state)
    if reached is not None and stage_graph.stage(from_stage).position > stage_graph.stage(reached).position:
        # Its stages before from_stage never produced (current) outputs for it to start from.
        raise RetryError(f"variant {key} has not reached {from_stage} (it is at {state[0]}/{state[1]}); "
                         f"retry it from {reached} or an earlier stage")
    # The job first: once it is back in its variant phase, the variant's change rolls it up.
    rows.reopen_job(conn, job_id, from_stage)
    rows.requeue(conn, Level.VARIANT, key, from_stage)
    return RetryRequest(Level.VARIANT, key, from_stage, state)


def _retry_job(conn: Connection, job_id: str, state: tuple[str, str], from_stage: str | None) -> list[RetryRequest]:
    variants = rows.lock_variants_of(conn, job_id)
    job_level_state = stage_graph.stage(state[0]).level == Level.JOB
    if job_level_state:
        _check_not_running(Level.JOB, job_id, state)  # a job stage in progress
    # (A job running in its variant phase only says that some variants are not finished: its
    # failed variants may be retried meanwhile; a running variant is refused below.)
    if from_stage is not None and stage_graph.stage(from_stage).level == Level.JOB:
        if not any(v.current_step == stage_graph.LAST_VARIANT_STAGE and v.status == Status.DONE for v in variants):
            raise RetryError(f"job {job_id} has no finished variant; its job stages cannot run")
        if not job_level_state and state[1] == Status.RUNNING:
            raise RetryError(f"job {job_id} still has variants in progress (at {state[0]}); "
                             "its job stages run by themselves when they end")
        rows.requeue(conn, Level.JOB, job_id, from_stage)
        return [RetryRequest(Level.JOB, job_id, from_stage, state)]
    if from_stage is None and job_level_state and state[1] == Status.FAILED:
        rows.requeue(conn, Level.JOB, job_id, state[0])
        return [RetryRequest(Level.JOB, job_id, state[0], state)]
    if from_stage is None:
        chosen = [v for v in variants if v.status == Status.FAILED]
        if not chosen:
            raise RetryError(f"job {job_id} has nothing failed (it is at {state[0]}/{state[1]}); "
                             "give --from STAGE to redo stages")
    else:
        chosen = list(variants)
    for v in chosen:
        _check_not_running(Level.VARIANT, v.key, (v.current_step, v.status))
    requests = []
    for v in chosen:
        v_state = (v.current_step, v.status)
        start = from_stage or v.current_step
        reached = _first_unfinished(v_state)
        if reached is not None and stage_graph.stage(reached).position < stage_graph.stage(start).position:
            start = reached  # a variant that never got as far as from_stage restarts where it stopped
        requests.append(_retry_variant(conn, v.key, job_id, v_state, start))
    return requests


def _first_unfinished(state: tuple[str, str]) -> str | None:
    """The first stage a variant in ``state`` has not finished; None once it finished them all."""
    return restart_stage(Level.VARIANT, state[0], state[1])
