"""The partitions' ``(current_step, status)`` rows and their ``stage_attempts``: every query about them.

A variant's row is in ``jobs_variants``, a job's in ``jobs``; ``level`` picks the table, so no
caller names one. Every write of a state is one of the named transitions below:

- ``claim``: a new attempt takes the partition: ``(stage, running)``, and its attempt row;
- ``complete``: ``(stage, done)`` and the attempt ``done``;
- ``schedule_retry`` / ``fail``: ``(stage, queued)`` with ``retry_at``, or ``(stage, failed)``;
- ``requeue``: a person's retry, ``(stage, queued)`` with a fresh attempt budget;
- ``cancel``: a stage whose run was cancelled before it began fails with the reason;
- ``reopen_job``: a job back in its variant phase when one of its variants runs again;
- ``set_state``: another system's direct write (an upstream producer, a benchmark, a test).

Prune is the last transition; it lives with the rest of retention's queries (``data.retention``).
What a transition should be (which attempt, whether to retry, how long to wait) is decided by the
state machine (``variant_pipeline.state``); this module only says it to the database.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from variant_pipeline.stages import Level, Outcome, Status

_TABLES = {Level.VARIANT: ("jobs_variants", "job_variants_id"), Level.JOB: ("jobs", "job_id")}

# The stage_attempts rows of one partition (:k): a variant's, or a job's own job-level ones.
_OF_PARTITION = "(job_variants_id = CAST(:k AS uuid) OR (level = 'job' AND job_id = CAST(:k AS uuid)))"

# The job-level stages, as a subquery (the stage names are in pipeline_stages).
_JOB_STAGES = "(SELECT name FROM pipeline_stages WHERE level = 'job')"


def _table(level: str) -> tuple[str, str]:
    return _TABLES[Level(level)]


def _status(value: str) -> str:
    try:
        return str(Status(value))
    except ValueError:
        raise ValueError(f"unknown status {value!r}; known: {', '.join(Status)}") from None


def worker_id() -> str:
    """This process, as an attempt row names its worker."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class OpenAttempt:
    attempt_id: int
    attempt: int
    worker: str


# --- Reading ---------------------------------------------------------------------------------


def read_row(conn: Connection, level: str, key: str, *, lock: bool) -> dict[str, Any] | None:
    """A partition's row (job_id, current_step, status, attempt, run_id, retry_at, creation_order),
    locked ``FOR UPDATE`` with ``lock``; None if it does not exist."""
    table, id_column = _table(level)
    order = "creation_order" if level == Level.VARIANT else "NULL::int AS creation_order"
    row = conn.execute(
        sa.text(f"SELECT job_id, current_step, status, attempt, run_id, retry_at, {order} FROM {table} "
                f"WHERE {id_column} = CAST(:k AS uuid)" + (" FOR UPDATE" if lock else "")),
        {"k": key},
    ).mappings().first()
    return dict(row) if row else None


def open_attempt(conn: Connection, partition_key: str, stage: str) -> OpenAttempt | None:
    """The latest attempt at ``stage`` still marked running, or None."""
    row = conn.execute(
        sa.text("SELECT attempt_id, attempt, worker FROM stage_attempts WHERE " + _OF_PARTITION +
                " AND stage = :stage AND outcome = 'running' ORDER BY attempt_id DESC LIMIT 1"),
        {"k": partition_key, "stage": stage},
    ).first()
    return OpenAttempt(row.attempt_id, row.attempt, row.worker) if row else None


def attempts_of(engine_or_conn: Engine | Connection, partition_key: str) -> list[dict[str, Any]]:
    """Every attempt recorded for a variant or a job (its job-level stages), oldest first."""
    query = sa.text(
        """SELECT attempt_id, level, stage, attempt, run_id, origin, worker, started_at, finished_at,
                  outcome, error, will_retry
             FROM stage_attempts
            WHERE """ + _OF_PARTITION + " ORDER BY attempt_id"
    )
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            return [dict(r) for r in conn.execute(query, {"k": partition_key}).mappings()]
    return [dict(r) for r in engine_or_conn.execute(query, {"k": partition_key}).mappings()]


_ROWS = """
    SELECT 'variant' AS level, job_variants_id::text AS key, job_id::text AS job_id, current_step, status,
           attempt, run_id, retry_at, updated_at
      FROM jobs_variants WHERE {variant_filter}
    UNION ALL
    SELECT 'job', job_id::text, job_id::text, current_step, status, attempt, run_id, retry_at, updated_at
      FROM jobs WHERE {job_filter}
"""


def _rows(conn: Connection, variant_filter: str, job_filter: str, **params: Any) -> list[dict[str, Any]]:
    query = _ROWS.format(variant_filter=variant_filter, job_filter=job_filter)
    return [dict(r) for r in conn.execute(sa.text(query), params).mappings()]


def running_rows(conn: Connection) -> list[dict[str, Any]]:
    """Every row in a stage now: variants running one, and jobs running a job-level stage
    (a job ``running`` at a variant stage only says that its variants are under way)."""
    return _rows(conn, "status = 'running'", f"status = 'running' AND current_step IN {_JOB_STAGES}")


def waiting_rows(conn: Connection, *, last_variant_stage: str, last_job_stage: str) -> list[dict[str, Any]]:
    """Every row waiting for its next stage: queued (a retry, or backing off), done before the
    last stage of its level, or a job whose variants have all finished."""
    return _rows(
        conn,
        "(status = 'queued' OR (status = 'done' AND current_step <> :last_variant))",
        f"""(status = 'queued' AND current_step IN {_JOB_STAGES})
            OR (status = 'done' AND current_step <> :last_job
                AND (current_step IN {_JOB_STAGES} OR current_step = :last_variant))""",
        last_variant=last_variant_stage, last_job=last_job_stage,
    )


def database_now(conn: Connection) -> datetime:
    """The database's clock: the one ``updated_at`` and ``retry_at`` are written with."""
    now: datetime = conn.execute(sa.text("SELECT now()")).scalar_one()
    return now


def last_attempts(conn: Connection, keys: list[str]) -> dict[tuple[str, str], tuple[int, str | None]]:
    """(partition, stage) -> (attempt_id, run_id) of its latest attempt (a stale run's record is none)."""
    if not keys:
        return {}
    rows = conn.execute(
        sa.text("""SELECT DISTINCT ON (coalesce(job_variants_id, job_id), stage)
                          coalesce(job_variants_id, job_id)::text AS key, stage, attempt_id, run_id
                     FROM stage_attempts
                    WHERE coalesce(job_variants_id, job_id) = ANY(CAST(:keys AS uuid[]))
                      AND outcome <> 'skipped'
                    ORDER BY coalesce(job_variants_id, job_id), stage, attempt_id DESC"""),
        {"keys": keys},
    )
    return {(r.key, r.stage): (r.attempt_id, r.run_id) for r in rows}


def runs_cut_short(conn: Connection, run_ids: list[str]) -> set[str]:
    """Those of ``run_ids`` with an attempt still ``running``, or ended ``lost`` or ``superseded``."""
    if not run_ids:
        return set()
    return set(conn.execute(sa.text(
        """SELECT DISTINCT run_id FROM stage_attempts
            WHERE run_id = ANY(:ids) AND outcome IN ('running', 'lost', 'superseded')"""),
        {"ids": run_ids}).scalars())


@dataclass(frozen=True)
class LockedState:
    key: str
    job_id: str
    current_step: str
    status: str


def lock_variant(conn: Connection, key: str) -> LockedState | None:
    """A variant's state, its row locked (before its job's: the order prune and the rollup use)."""
    row = conn.execute(
        sa.text("SELECT job_id::text, current_step, status FROM jobs_variants "
                "WHERE job_variants_id = CAST(:k AS uuid) FOR UPDATE"), {"k": key}).first()
    return LockedState(key, row.job_id, row.current_step, row.status) if row else None


@dataclass(frozen=True)
class LockedJob:
    current_step: str
    status: str
    pruned_at: datetime | None
    partitions_removed_at: datetime | None


def lock_job(conn: Connection, job_id: str) -> LockedJob | None:
    """A job's state and retention marks, its row locked."""
    row = conn.execute(
        sa.text("SELECT current_step, status, pruned_at, partitions_removed_at FROM jobs "
                "WHERE job_id = CAST(:k AS uuid) FOR UPDATE"), {"k": job_id}).first()
    return LockedJob(row.current_step, row.status, row.pruned_at, row.partitions_removed_at) if row else None


def lock_variants_of(conn: Connection, job_id: str) -> list[LockedState]:
    """A job's variants' states in creation order, their rows locked."""
    rows = conn.execute(
        sa.text("SELECT job_variants_id::text AS key, current_step, status FROM jobs_variants "
                "WHERE job_id = CAST(:j AS uuid) ORDER BY creation_order FOR UPDATE"), {"j": job_id}).all()
    return [LockedState(r.key, job_id, r.current_step, r.status) for r in rows]


# --- Transitions -----------------------------------------------------------------------------


def claim(conn: Connection, *, level: str, partition_key: str, job_id: str, stage: str, attempt: int,
          run_id: str, origin: str) -> int:
    """``(stage, running)`` for attempt ``attempt`` of run ``run_id``; returns its attempt_id.

    Call under the partition lock: an attempt still marked running then has no live worker (the
    recovery sensor had not seen it yet), so it is recorded as lost, replaced by this one.
    """
    table, id_column = _table(level)
    conn.execute(
        sa.text("""UPDATE stage_attempts
                      SET outcome = 'lost', finished_at = now(), will_retry = false,
                          error = 'worker lost: its partition was claimed again by run ' || :run
                    WHERE outcome = 'running' AND """ + _OF_PARTITION),
        {"run": run_id, "k": partition_key},
    )
    conn.execute(
        sa.text(f"""UPDATE {table} SET current_step = :stage, status = 'running', error = NULL,
                           attempt = :attempt, run_id = :run, retry_at = NULL
                     WHERE {id_column} = CAST(:k AS uuid)"""),
        {"stage": stage, "attempt": attempt, "run": run_id, "k": partition_key},
    )
    attempt_id: int = conn.execute(
        sa.text("""INSERT INTO stage_attempts (level, job_id, job_variants_id, stage, attempt, run_id, origin, worker)
                   VALUES (:level, :job, :variant, :stage, :attempt, :run, :origin, :worker)
                   RETURNING attempt_id"""),
        {"level": str(level), "job": job_id, "variant": partition_key if level == Level.VARIANT else None,
         "stage": stage, "attempt": attempt, "run": run_id, "origin": origin, "worker": worker_id()},
    ).scalar_one()
    return attempt_id


def record_skipped(conn: Connection, *, level: str, stage: str, partition_key: str, run_id: str, origin: str,
                   reason: str) -> None:
    """A stale run's record: it found ``stage`` not asked for and did nothing (no attempt at all)."""
    table, id_column = _table(level)
    conn.execute(
        sa.text(f"""INSERT INTO stage_attempts (level, job_id, job_variants_id, stage, attempt, run_id, origin,
                                                worker, finished_at, outcome, error, will_retry)
                    SELECT :level, job_id, :variant, :stage, greatest(attempt, 1), :run, :origin, :worker,
                           now(), 'skipped', :reason, false
                      FROM {table} WHERE {id_column} = CAST(:k AS uuid)"""),
        {"level": str(level), "variant": partition_key if level == Level.VARIANT else None, "stage": stage,
         "run": run_id, "origin": origin, "worker": worker_id(), "reason": reason, "k": partition_key},
    )


def reopen_job(conn: Connection, job_id: str, variant_stage: str) -> None:
    """A job that moved on to its job-level stages goes back to its variant phase at
    ``variant_stage``, so that the rollup runs its job stages again when the variants end."""
    conn.execute(
        sa.text(f"""UPDATE jobs SET current_step = :stage, status = 'running', error = NULL, attempt = 0,
                           retry_at = NULL
                     WHERE job_id = CAST(:j AS uuid) AND current_step IN {_JOB_STAGES}"""),
        {"stage": variant_stage, "j": job_id},
    )


def end_attempt(conn: Connection, attempt_id: int, outcome: Outcome, error: str | None,
                will_retry: bool | None) -> None:
    """Close an attempt row with its outcome; an attempt ends once (a second end changes nothing)."""
    conn.execute(
        sa.text("""UPDATE stage_attempts SET outcome = :outcome, error = :error, will_retry = :retry,
                                             finished_at = now()
                    WHERE attempt_id = :id AND outcome = 'running'"""),
        {"outcome": str(outcome), "error": error, "retry": will_retry, "id": attempt_id},
    )


def complete(conn: Connection, level: str, partition_key: str, attempt_id: int) -> None:
    """``(its stage, done)`` and the attempt ``done``."""
    table, id_column = _table(level)
    conn.execute(
        sa.text(f"UPDATE {table} SET status = 'done', error = NULL WHERE {id_column} = CAST(:k AS uuid)"),
        {"k": partition_key},
    )
    end_attempt(conn, attempt_id, Outcome.DONE, None, None)


def schedule_retry(conn: Connection, level: str, partition_key: str, stage: str, error: str,
                   delay: timedelta) -> None:
    """``(stage, queued)``, due ``delay`` from now, with the reason of the failure it retries."""
    table, id_column = _table(level)
    conn.execute(
        sa.text(f"""UPDATE {table} SET current_step = :stage, status = 'queued', error = :error,
                           retry_at = now() + :delay WHERE {id_column} = CAST(:k AS uuid)"""),
        {"stage": stage, "error": error, "delay": delay, "k": partition_key},
    )


def fail(conn: Connection, level: str, partition_key: str, stage: str, error: str) -> None:
    """``(stage, failed)`` with its reason: nothing retries it by itself."""
    table, id_column = _table(level)
    conn.execute(
        sa.text(f"""UPDATE {table} SET current_step = :stage, status = 'failed', error = :error,
                           retry_at = NULL WHERE {id_column} = CAST(:k AS uuid)"""),
        {"stage": stage, "error": error, "k": partition_key},
    )


def cancel(conn: Connection, level: str, partition_key: str, stage: str, error: str, *,
           found: tuple[str, str]) -> bool:
    """``(stage, failed)`` with ``error`` if the row is still in the state ``found``; returns whether it was."""
    table, id_column = _table(level)
    return conn.execute(
        sa.text(f"""UPDATE {table} SET current_step = :stage, status = 'failed', retry_at = NULL, error = :error
                     WHERE {id_column} = CAST(:k AS uuid) AND current_step = :found_stage AND status = :found_status"""),
        {"stage": stage, "k": partition_key, "found_stage": found[0], "found_status": found[1], "error": error},
    ).rowcount == 1


def requeue(conn: Connection, level: str, partition_key: str, stage: str) -> None:
    """``(stage, queued)`` with a fresh attempt budget: a person's retry.

    A row already queued at that stage (backing off before an automatic retry, say) does not change
    state, so no outbox event starts a run: it becomes a retry due now instead, which the recovery
    sensor starts on its next tick.
    """
    table, id_column = _table(level)
    conn.execute(
        sa.text(f"""UPDATE {table} SET current_step = :stage, status = 'queued', error = NULL, attempt = 0,
                           retry_at = CASE WHEN current_step = :stage AND status = 'queued' THEN now() END
                     WHERE {id_column} = CAST(:k AS uuid)"""),
        {"stage": stage, "k": partition_key},
    )


def set_state(conn: Connection, level: str, partition_key: str, stage: str, status: Status | str, *,
              error: str | None = None, expected: tuple[str, str] | None = None) -> bool:
    """Another system's direct write: the row to ``(stage, status)``, as a producer writing straight into
    the table would (the same triggers and outbox events fire). With ``expected=(stage, status)``, only
    from that state (a compare-and-set: one that lost a race returns False and changes nothing)."""
    table, id_column = _table(level)
    params: dict[str, Any] = {"k": str(partition_key), "stage": stage, "status": _status(status),
                              "error": error}
    condition = ""
    if expected is not None:
        condition = " AND current_step = :expected_stage AND status = :expected_status"
        params.update(expected_stage=expected[0], expected_status=expected[1])
    return conn.execute(
        sa.text(f"UPDATE {table} SET current_step = :stage, status = :status, error = :error "
                f"WHERE {id_column} = CAST(:k AS uuid){condition}"),
        params,
    ).rowcount == 1


def set_states(conn: Connection, level: str, partition_keys: Sequence[str], stage: str, status: Status | str) -> int:
    """``set_state`` for many rows in one statement (a bulk load, a benchmark's fill); returns how many moved."""
    table, id_column = _table(level)
    moved: int = conn.execute(
        sa.text(f"UPDATE {table} SET current_step = :stage, status = :status "
                f"WHERE {id_column} = ANY(CAST(:keys AS uuid[]))"),
        {"stage": stage, "status": _status(status), "keys": [str(k) for k in partition_keys]},
    ).rowcount
    return moved
