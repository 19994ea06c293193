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

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from variant_pipeline import stages as stage_graph
from variant_pipeline.data.engine import ORIGIN_SETTING
from variant_pipeline.state.locks import ClaimRefused
from variant_pipeline.state.retry import RetryPolicy, failure_message


class AttemptSuperseded(ClaimRefused):
    """The partition moved on to another attempt while this one ran; its results were discarded."""


class PartitionMissing(LookupError):
    """The variant or job does not exist."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# The stage_attempts rows of one partition (:k): a variant's, or a job's own job-level ones.
OF_PARTITION = "(job_variants_id = CAST(:k AS uuid) OR (level = 'job' AND job_id = CAST(:k AS uuid)))"


def table_for(level: str) -> tuple[str, str]:
    return ("jobs_variants", "job_variants_id") if level == "variant" else ("jobs", "job_id")


def set_origin(conn: Connection, origin: str) -> None:
    conn.execute(sa.text("SELECT set_config(:name, :origin, true)"), {"name": ORIGIN_SETTING, "origin": origin})


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


def read_row(conn: Connection, level: str, key: str, *, lock: bool) -> dict[str, Any] | None:
    table, id_column = table_for(level)
    order = "creation_order" if level == "variant" else "NULL::int AS creation_order"
    row = conn.execute(
        sa.text(f"SELECT job_id, current_step, status, attempt, run_id, retry_at, {order} FROM {table} "
                f"WHERE {id_column} = CAST(:k AS uuid)" + (" FOR UPDATE" if lock else "")),
        {"k": key},
    ).mappings().first()
    return dict(row) if row else None


def claim(conn: Connection, *, stage: str, partition_key: str, run_id: str, origin: str,
          continues_attempts: bool) -> Claim:
    """Mark the partition ``(stage, running)`` for a new attempt; call inside a transaction under the lock.

    ``continues_attempts`` is set by automatic retries: they count on from the row's last attempt
    at this stage. Any other run (the outbox sensor's, a hand-started one, a manual retry) starts
    a new round at attempt 1.
    """
    level = stage_graph.stage(stage).level
    table, id_column = table_for(level)
    row = read_row(conn, level, partition_key, lock=True)
    if row is None:
        raise PartitionMissing(f"{level} {partition_key} does not exist")
    attempt = row["attempt"] + 1 if continues_attempts and row["current_step"] == stage else 1
    job_id = str(row["job_id"])
    # Under the lock, an attempt still marked running has no live worker (recovery had not seen
    # it yet): it is lost, and this claim replaces it.
    conn.execute(
        sa.text("""UPDATE stage_attempts
                      SET outcome = 'lost', finished_at = now(), will_retry = false,
                          error = 'worker lost: its partition was claimed again by run ' || :run
                    WHERE outcome = 'running' AND """ + OF_PARTITION),
        {"run": run_id, "k": partition_key},
    )
    if level == "variant":
        reopen_job(conn, job_id, stage)
    conn.execute(
        sa.text(f"""UPDATE {table} SET current_step = :stage, status = 'running', error = NULL,
                           attempt = :attempt, run_id = :run, retry_at = NULL
                     WHERE {id_column} = CAST(:k AS uuid)"""),
        {"stage": stage, "attempt": attempt, "run": run_id, "k": partition_key},
    )
    attempt_id = conn.execute(
        sa.text("""INSERT INTO stage_attempts (level, job_id, job_variants_id, stage, attempt, run_id, origin, worker)
                   VALUES (:level, :job, :variant, :stage, :attempt, :run, :origin, :worker)
                   RETURNING attempt_id"""),
        {"level": level, "job": job_id, "variant": partition_key if level == "variant" else None,
         "stage": stage, "attempt": attempt, "run": run_id, "origin": origin, "worker": worker_id()},
    ).scalar_one()
    return Claim(attempt_id, level, partition_key, job_id, stage, attempt, run_id, row["creation_order"])


def record_skipped(conn: Connection, *, stage: str, partition_key: str, run_id: str, origin: str,
                   reason: str) -> None:
    """Record that run ``run_id`` found ``stage`` not asked for and did nothing (a stale run).

    Shown by ``status --attempts`` beside the real attempts; it is no attempt at the stage: it
    wrote nothing, and no retry counts it.
    """
    level = stage_graph.stage(stage).level
    table, id_column = table_for(level)
    conn.execute(
        sa.text(f"""INSERT INTO stage_attempts (level, job_id, job_variants_id, stage, attempt, run_id, origin,
                                                worker, finished_at, outcome, error, will_retry)
                    SELECT :level, job_id, :variant, :stage, greatest(attempt, 1), :run, :origin, :worker,
                           now(), 'skipped', :reason, false
                      FROM {table} WHERE {id_column} = CAST(:k AS uuid)"""),
        {"level": level, "variant": partition_key if level == "variant" else None, "stage": stage,
         "run": run_id, "origin": origin, "worker": worker_id(), "reason": reason, "k": partition_key},
    )


def open_attempt(conn: Connection, partition_key: str, stage: str) -> sa.Row | None:
    """The latest attempt at ``stage`` still marked running: (attempt_id, attempt, worker), or None."""
    return conn.execute(
        sa.text("SELECT attempt_id, attempt, worker FROM stage_attempts WHERE " + OF_PARTITION +
                " AND stage = :stage AND outcome = 'running' ORDER BY attempt_id DESC LIMIT 1"),
        {"k": partition_key, "stage": stage},
    ).first()


def running_attempt(conn: Connection, level: str, partition_key: str) -> Claim | None:
    """The attempt the row says is running now (row locked), or None."""
    row = read_row(conn, level, partition_key, lock=True)
    if row is None or row["status"] != "running":
        return None
    found = open_attempt(conn, partition_key, row["current_step"])
    if found is None or found.attempt != row["attempt"]:
        return None
    return Claim(found.attempt_id, level, partition_key, str(row["job_id"]), row["current_step"], row["attempt"],
                 row["run_id"], row["creation_order"])


def reopen_job(conn: Connection, job_id: str, variant_stage: str) -> None:
    """A variant stage runs again after its job moved on to its job-level stages: the job goes
    back to its variant phase, so that the rollup runs the job stages again when the variants end.
    """
    conn.execute(
        sa.text("""UPDATE jobs SET current_step = :stage, status = 'running', error = NULL, attempt = 0, retry_at = NULL
                    WHERE job_id = CAST(:j AS uuid)
                      AND current_step IN (SELECT name FROM pipeline_stages WHERE level = 'job')"""),
        {"stage": variant_stage, "j": job_id},
    )


def check_fence(conn: Connection, claim_: Claim) -> None:
    """Raise ``AttemptSuperseded`` unless the row still names this attempt as running; locks the row."""
    row = read_row(conn, claim_.level, claim_.partition_key, lock=True)
    current = row and (row["current_step"], row["status"], row["attempt"], row["run_id"])
    if current != (claim_.stage, "running", claim_.attempt, claim_.run_id):
        raise AttemptSuperseded(
            f"{claim_.stage} attempt {claim_.attempt} of run {claim_.run_id} was superseded "
            f"(the row is now {current}); its results were discarded"
        )


def _finish_attempt(conn: Connection, attempt_id: int, outcome: str, error: str | None,
                    will_retry: bool | None) -> None:
    conn.execute(
        sa.text("""UPDATE stage_attempts SET outcome = :outcome, error = :error, will_retry = :retry,
                                             finished_at = now()
                    WHERE attempt_id = :id AND outcome = 'running'"""),  # an attempt ends once
        {"outcome": outcome, "error": error, "retry": will_retry, "id": attempt_id},
    )


def mark_done(conn: Connection, claim_: Claim) -> None:
    table, id_column = table_for(claim_.level)
    conn.execute(
        sa.text(f"UPDATE {table} SET status = 'done', error = NULL WHERE {id_column} = CAST(:k AS uuid)"),
        {"k": claim_.partition_key},
    )
    _finish_attempt(conn, claim_.attempt_id, "done", None, None)


def mark_superseded(conn: Connection, claim_: Claim, reason: str) -> None:
    _finish_attempt(conn, claim_.attempt_id, "superseded", reason, None)


def mark_failed(conn: Connection, *, level: str, partition_key: str, stage: str, attempt: int,
                attempt_id: int | None, reason: str, retryable: bool, policy: RetryPolicy,
                outcome: str = "failed") -> bool:
    """Record a failed (or lost) attempt; schedule the next one or fail the row. Returns will_retry."""
    will_retry = retryable and attempt < policy.max_attempts
    message = failure_message(reason, attempt, policy, will_retry, outcome)
    table, id_column = table_for(level)
    if will_retry:
        conn.execute(
            sa.text(f"""UPDATE {table} SET current_step = :stage, status = 'queued', error = :error,
                               retry_at = now() + :delay WHERE {id_column} = CAST(:k AS uuid)"""),
            {"stage": stage, "error": message, "delay": timedelta(seconds=policy.delay_after(attempt, outcome)),
             "k": partition_key},
        )
    else:
        conn.execute(
            sa.text(f"""UPDATE {table} SET current_step = :stage, status = 'failed', error = :error,
                               retry_at = NULL WHERE {id_column} = CAST(:k AS uuid)"""),
            {"stage": stage, "error": message, "k": partition_key},
        )
    if attempt_id is not None:  # None: the row was set running by hand, with no attempt behind it
        _finish_attempt(conn, attempt_id, outcome, reason, will_retry)
    return will_retry


def attempts_of(engine_or_conn: Engine | Connection, partition_key: str) -> list[dict[str, Any]]:
    """Every attempt recorded for a variant or a job (its job-level stages), oldest first."""
    query = sa.text(
        """SELECT attempt_id, level, stage, attempt, run_id, origin, worker, started_at, finished_at,
                  outcome, error, will_retry
             FROM stage_attempts
            WHERE """ + OF_PARTITION + " ORDER BY attempt_id"
    )
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            return [dict(r) for r in conn.execute(query, {"k": partition_key}).mappings()]
    return [dict(r) for r in engine_or_conn.execute(query, {"k": partition_key}).mappings()]
