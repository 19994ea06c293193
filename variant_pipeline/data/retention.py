"""Retention's queries: finished jobs, locking one to prune it, the prune itself, old outbox events
and the rows that keep a file. What to prune and in which order is ``state.retention``'s."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from variant_pipeline.data.locks import lock_key

JOB_PAGE = 500
EVENT_BATCH = 10_000
_PATH_CHUNK = 1_000


class JobBusy(Exception):
    """A writer or a worker holds one of the job's rows or partitions: it is not pruned this time."""


def finished_jobs(engine: Engine, cutoff: datetime, *, with_pruned: bool) -> Iterator[str]:
    """Jobs finished before the cutoff and not pruned since they finished (``with_pruned``: all of them)."""
    return _oldest_finished(engine, cutoff, "(:rows OR pruned_at IS NULL OR pruned_at < finished_at)",
                            {"rows": with_pruned})


def partitioned_jobs(engine: Engine, before: datetime) -> Iterator[str]:
    """Finished jobs whose partitions were not removed since they finished."""
    return _oldest_finished(engine, before, "(partitions_removed_at IS NULL OR partitions_removed_at < finished_at)",
                            {})


def _oldest_finished(engine: Engine, cutoff: datetime, which: str, params: dict[str, object]) -> Iterator[str]:
    """Jobs finished before ``cutoff`` that match ``which``, oldest first, a page at a time
    (keyset, so a skipped job does not stall the walk)."""
    after: tuple[datetime, str] | None = None
    while True:
        with engine.connect() as conn:
            page = conn.execute(
                sa.text(
                    f"""SELECT finished_at, job_id::text FROM jobs
                         WHERE finished_at < :cutoff AND {which}
                           AND (CAST(:after_ts AS timestamptz) IS NULL
                                OR (finished_at, job_id) > (CAST(:after_ts AS timestamptz), CAST(:after_id AS uuid)))
                         ORDER BY finished_at, job_id LIMIT :limit"""
                ),
                {**params, "cutoff": cutoff, "after_ts": after[0] if after else None,
                 "after_id": after[1] if after else None, "limit": JOB_PAGE},
            ).all()
        for finished_at, job_id in page:
            yield job_id
            after = (finished_at, job_id)
        if len(page) < JOB_PAGE:
            return


@dataclass(frozen=True)
class FinishedJob:
    status: str
    finished_at: datetime
    variant_keys: list[str]


def lock_finished_job(conn: Connection, job_id: str, cutoff: datetime) -> FinishedJob | None:
    """Lock the job's rows and partitions without waiting (``JobBusy`` if taken); None unless the
    job and all its variants are still finished before the cutoff with no attempt running."""
    try:
        # Variants first, then the job: the order a claim and the rollup take them.
        variants = conn.execute(
            sa.text("""SELECT job_variants_id::text, finished_at FROM jobs_variants WHERE job_id = CAST(:j AS uuid)
                        ORDER BY job_variants_id FOR UPDATE NOWAIT"""), {"j": job_id}).all()
        job = conn.execute(
            sa.text("SELECT status, finished_at FROM jobs WHERE job_id = CAST(:j AS uuid) FOR UPDATE NOWAIT"),
            {"j": job_id}).first()
    except sa.exc.OperationalError as exc:
        if getattr(exc.orig, "pgcode", None) == "55P03":  # lock_not_available: a writer holds it
            raise JobBusy(job_id) from exc
        raise
    if job is None:
        return None
    keys = [key for key, _ in variants]
    for key in [*keys, job_id]:
        # The session lock a worker holds for a whole stage; taken here until commit.
        if not conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key(key)}).scalar_one():
            raise JobBusy(job_id)
    running = conn.execute(
        sa.text("SELECT count(*) FROM stage_attempts WHERE job_id = CAST(:j AS uuid) AND outcome = 'running'"),
        {"j": job_id}).scalar_one()
    finished = job.finished_at is not None and job.finished_at < cutoff and all(f is not None for _, f in variants)
    if not finished or running:
        return None
    return FinishedJob(job.status, job.finished_at, keys)


def image_paths_of(conn: Connection, job_id: str) -> list[str]:
    """The keys of every file a job's rows name."""
    return [p for (p,) in conn.execute(
        sa.text("SELECT path FROM image_assets WHERE job_id = CAST(:j AS uuid)"), {"j": job_id})]


def prune_job(conn: Connection, job_id: str, *, delete_rows: bool, partitions_only: bool) -> None:
    """The prune transition: the job's rows deleted (their foreign keys cascade), or the job marked
    pruned (``partitions_only``: its partitions removed to keep the budget, its files kept).
    The age rule keeps the time the budget removed the partitions, if it did."""
    if delete_rows:
        conn.execute(sa.text("DELETE FROM jobs WHERE job_id = CAST(:j AS uuid)"), {"j": job_id})
        return
    conn.execute(sa.text(
        """UPDATE jobs SET pruned_at = CASE WHEN :budget THEN pruned_at ELSE now() END,
                  partitions_removed_at = CASE WHEN partitions_removed_at >= finished_at
                                               THEN partitions_removed_at ELSE now() END
            WHERE job_id = CAST(:j AS uuid)"""),
        {"j": job_id, "budget": partitions_only})


_BEHIND = "(xid, id) <= (CAST(:xid AS xid8), :id) AND created_at < :cutoff"


def count_events_behind(engine: Engine, xid: int, event_id: int, cutoff: datetime) -> int:
    """Outbox events created before ``cutoff`` at or before the cursor position (xid, id)."""
    with engine.connect() as conn:
        count: int = conn.execute(sa.text(f"SELECT count(*) FROM pipeline_events WHERE {_BEHIND}"),
                                  {"xid": str(xid), "id": event_id, "cutoff": cutoff}).scalar_one()
    return count


def delete_events_behind(engine: Engine, xid: int, event_id: int, cutoff: datetime) -> int:
    """Delete those events, a batch per transaction; returns how many went."""
    params = {"xid": str(xid), "id": event_id, "cutoff": cutoff, "batch": EVENT_BATCH}
    total = 0
    while True:
        with engine.begin() as conn:
            deleted = conn.execute(
                sa.text(f"""DELETE FROM pipeline_events WHERE id IN (
                               SELECT id FROM pipeline_events WHERE {_BEHIND} ORDER BY created_at LIMIT :batch)"""),
                params,
            ).rowcount
        total += deleted
        if deleted < EVENT_BATCH:
            return total


def oldest_running_attempt(conn: Connection) -> datetime | None:
    """When the oldest attempt still running began (its file may not be named by a row yet)."""
    started: datetime | None = conn.execute(
        sa.text("SELECT min(started_at) FROM stage_attempts WHERE outcome = 'running'")).scalar_one()
    return started


def live_paths(conn: Connection, paths: list[str]) -> set[str]:
    """Those of ``paths`` a live row names (a row of a pruned job written before its prune is not live)."""
    named: set[str] = set()
    for start in range(0, len(paths), _PATH_CHUNK):
        named.update(p for (p,) in conn.execute(sa.text(
            """SELECT a.path FROM image_assets a LEFT JOIN jobs j ON j.job_id = a.job_id
                WHERE a.path = ANY(:paths) AND (j.pruned_at IS NULL OR a.created_at > j.pruned_at)"""),
            {"paths": paths[start:start + _PATH_CHUNK]}))
    return named
