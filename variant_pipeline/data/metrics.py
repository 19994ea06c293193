"""What `variant-pipeline metrics` reads from the database: plain SELECTs, one per figure.

The pipeline never waits on these: they take no row or advisory locks (a SELECT's share lock
conflicts only with schema changes) and run read-only with a statement timeout. Totals of
attempt endings and outbox events are read by transaction id, as the outbox reader does: only
what ended below the oldest transaction still in flight, so every ending is read exactly once
(see sql/006_attempt_finish_xid.sql).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from variant_pipeline import stages as stage_graph
from variant_pipeline.data.outbox import decode_cursor

# Upper bounds (s) of the attempt duration histogram: tiny CPU models take well under a second,
# real ones on a GPU seconds, a long CPU diffusion minutes (the stage timeout is 30 min).
DURATION_BUCKETS_S: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# Endings whose duration is the stage's own (a lost attempt's end is when recovery noticed).
TIMED_OUTCOMES = ("done", "failed")


@contextmanager
def read_only(engine: Engine, timeout_ms: int = 5000) -> Iterator[Connection]:
    """One read-only transaction that gives up rather than wait (a scrape is never worth a stall)."""
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        conn.execute(sa.text("SELECT set_config('statement_timeout', :t, true), "
                             "set_config('lock_timeout', :t, true)"), {"t": str(timeout_ms)})
        yield conn


def oldest_in_flight_xid(conn: Connection) -> int:
    """Every transaction below this id has ended: nothing can commit beneath it any more."""
    return int(conn.execute(sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")).scalar_one())


@dataclass(frozen=True)
class StateCount:
    level: str  # "variant" | "job"
    stage: str
    status: str
    n: int


def state_counts(conn: Connection) -> list[StateCount]:
    rows = conn.execute(sa.text("""
        SELECT 'variant' AS level, current_step, status, count(*) FROM jobs_variants GROUP BY 2, 3
        UNION ALL
        SELECT 'job', current_step, status, count(*) FROM jobs GROUP BY 2, 3""")).all()
    return [StateCount(r[0], r[1], r[2], int(r[3])) for r in rows]


@dataclass(frozen=True)
class Backlog:
    events: int
    oldest_created_at: datetime | None


def outbox_backlog(conn: Connection, cursor: str | None) -> Backlog:
    """Events after the outbox sensor's saved cursor: how far behind it is."""
    xid, event_id = decode_cursor(cursor)
    row = conn.execute(sa.text("""
        SELECT count(*), min(created_at) FROM pipeline_events
         WHERE (xid, id) > (CAST(:xid AS xid8), :id)"""), {"xid": str(xid), "id": event_id}).one()
    return Backlog(int(row[0]), row[1])


@dataclass(frozen=True)
class AttemptTally:
    stage: str
    outcome: str
    retry_scheduled: bool
    bucket: int  # index into DURATION_BUCKETS_S; len(DURATION_BUCKETS_S) for +Inf; -1: untimed
    n: int
    seconds: float


def attempt_tallies(conn: Connection, from_xid: int, below_xid: int) -> list[AttemptTally]:
    """Attempt endings of transactions in ``[from_xid, below_xid)``, grouped."""
    rows = conn.execute(sa.text("""
        SELECT stage, outcome, coalesce(will_retry, false),
               CASE WHEN outcome = ANY(:timed)
                    THEN width_bucket(extract(epoch FROM finished_at - started_at)::float8,
                                      CAST(:bounds AS float8[])) ELSE -1 END AS bucket,
               count(*), coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)
          FROM stage_attempts
         WHERE outcome <> 'running'
           AND finished_xid >= CAST(:lo AS xid8) AND finished_xid < CAST(:hi AS xid8)
         GROUP BY 1, 2, 3, 4"""),
        {"timed": list(TIMED_OUTCOMES), "bounds": _pg_array(DURATION_BUCKETS_S),
         "lo": str(from_xid), "hi": str(below_xid)}).all()
    # width_bucket counts a value equal to a bound into the bucket above it; Prometheus buckets are
    # "less than or equal": the difference is a value landing exactly on a bound, immaterial here.
    return [AttemptTally(r[0], r[1], bool(r[2]), int(r[3]), int(r[4]), float(r[5])) for r in rows]


@dataclass(frozen=True)
class EventTally:
    level: str
    new_stage: str
    new_status: str
    origin_kind: str  # "run" (a stage's own progress), "recovery", "retry" (cli:retry), "other"
    n: int


def event_tallies(conn: Connection, from_xid: int, below_xid: int) -> list[EventTally]:
    """Outbox events of transactions in ``[from_xid, below_xid)``, grouped by what they record."""
    rows = conn.execute(sa.text("""
        SELECT kind, new_step, new_status,
               CASE WHEN origin LIKE 'dagster-run:%' THEN 'run' WHEN origin LIKE 'recovery:%' THEN 'recovery'
                    WHEN origin = 'cli:retry' THEN 'retry' ELSE 'other' END,
               count(*)
          FROM pipeline_events
         WHERE xid >= CAST(:lo AS xid8) AND xid < CAST(:hi AS xid8)
         GROUP BY 1, 2, 3, 4"""), {"lo": str(from_xid), "hi": str(below_xid)}).all()
    return [EventTally(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]


def last_job_finished_at(conn: Connection) -> datetime | None:
    return conn.execute(sa.text("SELECT max(finished_at) FROM jobs WHERE finished_at IS NOT NULL")).scalar_one()


def database_now(conn: Connection) -> datetime:
    return conn.execute(sa.text("SELECT now()")).scalar_one()


def stuck_candidates(conn: Connection, stall_after_s: float, limit: int = 10_000) -> list[tuple[str, str]]:
    """``(level, partition key)`` of rows that are not finished, have not changed for
    ``stall_after_s`` and have no attempt in progress: what the recovery sensor's stall rule is
    for. The caller drops those with a Dagster run queued or in progress (a backlog, not a stall)."""
    rows = conn.execute(sa.text("""
        (SELECT 'variant', v.job_variants_id::text FROM jobs_variants v
          WHERE v.status <> 'failed' AND NOT (v.status = 'done' AND v.current_step = :last_variant)
            AND v.updated_at < now() - make_interval(secs => :stall)
            AND NOT EXISTS (SELECT 1 FROM stage_attempts a WHERE a.outcome = 'running'
                               AND a.job_variants_id = v.job_variants_id)
          LIMIT :limit)
        UNION ALL
        (SELECT 'job', j.job_id::text FROM jobs j
          WHERE j.status <> 'failed' AND NOT (j.status = 'done' AND j.current_step = :last_job)
            AND j.updated_at < now() - make_interval(secs => :stall)
            AND NOT EXISTS (SELECT 1 FROM stage_attempts a WHERE a.outcome = 'running'
                               AND a.level = 'job' AND a.job_id = j.job_id)
          LIMIT :limit)"""),
        {"last_variant": stage_graph.LAST_VARIANT_STAGE, "last_job": stage_graph.LAST_JOB_STAGE,
         "stall": float(stall_after_s), "limit": limit}).all()
    return [(r[0], r[1]) for r in rows]


def _pg_array(values: Sequence[float]) -> str:
    return "{" + ",".join(repr(float(v)) for v in values) + "}"
