"""Reads that check the tables from outside: the soak's invariant checkers and the benchmarks' measurements.

The soak (``scripts/soak.py``, ``scripts/soak_checks.py``) is an independent observer of the
pipeline: these queries are written apart from the pipeline's own (``partition_state``,
``retention``, ``outbox``...) on purpose, so that a bug in one of those is not repeated by the
check that should catch it. Nothing in the pipeline calls this module. Every function is one
read; rows come back as plain tuples in the column order their docstring gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# The soak's stage attempt: attempt_id, partition, level, stage, attempt, run_id, outcome, finished_at.
AttemptRow = tuple[int, str, str, str, int, str | None, str, datetime | None]

_ATTEMPTS = """SELECT attempt_id, coalesce(job_variants_id, job_id)::text, level, stage, attempt, run_id, outcome,
                      finished_at
                 FROM stage_attempts WHERE {where} ORDER BY attempt_id"""


# --- The soak's invariant checks ---------------------------------------------------------------


def _attempt_rows(rows: Sequence[sa.Row]) -> list[AttemptRow]:
    return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]


def all_attempts(conn: Connection) -> list[AttemptRow]:
    """Every stage attempt, oldest first."""
    return _attempt_rows(conn.execute(sa.text(_ATTEMPTS.format(where="TRUE"))).all())


def attempts_at_stage(conn: Connection, partition: str, level: str, stage: str) -> list[AttemptRow]:
    """The attempts of one partition (a variant, or a job's own) at one stage, oldest first."""
    rows = conn.execute(
        sa.text(_ATTEMPTS.format(where="coalesce(job_variants_id, job_id) = CAST(:k AS uuid) AND "
                                       "level = :level AND stage = :s")),
        {"k": partition, "level": level, "s": stage}).all()
    return _attempt_rows(rows)


def unpruned_images(conn: Connection) -> list[tuple[str, str, str]]:
    """(path, image_type, owner) of every image row but those older than their job's last prune,
    oldest first; the owner is the variant, else the job, else ``-``."""
    rows = conn.execute(sa.text(
        """SELECT a.path, a.image_type, coalesce(a.job_variants_id::text, a.job_id::text, '-')
             FROM image_assets a LEFT JOIN jobs j ON j.job_id = a.job_id
            WHERE j.pruned_at IS NULL OR a.created_at > j.pruned_at
            ORDER BY a.created_at""")).all()
    return [(r[0], r[1], r[2]) for r in rows]


def image_named_unpruned(conn: Connection, path: str) -> bool:
    """Whether a row not older than its job's last prune names ``path``."""
    n: int = conn.execute(sa.text(
        """SELECT count(*) FROM image_assets a LEFT JOIN jobs j ON j.job_id = a.job_id
            WHERE a.path = :p AND (j.pruned_at IS NULL OR a.created_at > j.pruned_at)"""),
        {"p": path}).scalar_one()
    return n > 0


def tenant_row_counts(conn: Connection, tenant: str) -> tuple[int, int]:
    """(jobs, image rows) of a tenant."""
    jobs: int = conn.execute(sa.text("SELECT count(*) FROM jobs WHERE tenant_id = :t"), {"t": tenant}).scalar_one()
    images: int = conn.execute(sa.text("SELECT count(*) FROM image_assets WHERE tenant_id = :t"),
                               {"t": tenant}).scalar_one()
    return jobs, images


def current_states(conn: Connection) -> list[tuple[str, str, str, str]]:
    """(level, key, current_step, status) of every variant and every job."""
    rows = conn.execute(sa.text(
        """SELECT 'variant', job_variants_id::text, current_step, status FROM jobs_variants
           UNION ALL SELECT 'job', job_id::text, current_step, status FROM jobs""")).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def event_transitions(conn: Connection) -> list[tuple[str, str, str | None, str | None, str, str, int]]:
    """(kind, key, old_step, old_status, new_step, new_status, id) of every retained outbox event, by id."""
    rows = conn.execute(sa.text(
        """SELECT kind, coalesce(job_variants_id, job_id)::text, old_step, old_status, new_step, new_status, id
             FROM pipeline_events ORDER BY id""")).all()
    return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]


def held_advisory_keys(conn: Connection) -> set[int]:
    """Advisory locks held in this database, as the signed 64-bit keys the pipeline uses (read
    from pg_locks: never by trying to take one, which could turn a worker away)."""
    return {int(k) for (k,) in conn.execute(sa.text(
        """SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks
            WHERE locktype = 'advisory' AND objsubid = 1 AND granted
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""))}


def running_attempts(conn: Connection) -> list[tuple[int, str, str, str | None, str | None]]:
    """(attempt_id, partition, stage, run_id, worker) of every attempt still ``running``, oldest first."""
    rows = conn.execute(sa.text(
        """SELECT attempt_id, coalesce(job_variants_id, job_id)::text, stage, run_id, worker
             FROM stage_attempts WHERE outcome = 'running' ORDER BY attempt_id""")).all()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def open_jobs(conn: Connection, last_job_stage: str) -> list[tuple[str, str, str]]:
    """(job_id, current_step, status) of jobs neither failed nor done at ``last_job_stage``, oldest first."""
    rows = conn.execute(sa.text(
        "SELECT job_id::text, current_step, status FROM jobs WHERE NOT (status = 'failed' OR "
        "(status = 'done' AND current_step = :last)) ORDER BY created_at"), {"last": last_job_stage}).all()
    return [(r[0], r[1], r[2]) for r in rows]


def open_variants(conn: Connection, last_variant_stage: str) -> list[tuple[str, str, str, str]]:
    """(job_variants_id, job_id, current_step, status) of variants neither failed nor done at
    ``last_variant_stage``, oldest first."""
    rows = conn.execute(sa.text(
        "SELECT job_variants_id::text, job_id::text, current_step, status FROM jobs_variants WHERE NOT "
        "(status = 'failed' OR (status = 'done' AND current_step = :last)) ORDER BY created_at"),
        {"last": last_variant_stage}).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def failed_rows(conn: Connection) -> list[tuple[str, str, str, str, str | None]]:
    """(level, key, job_id, current_step, error) of every failed variant and job."""
    rows = conn.execute(sa.text(
        """SELECT 'variant', job_variants_id::text, job_id::text, current_step, error FROM jobs_variants WHERE status = 'failed'
           UNION ALL SELECT 'job', job_id::text, job_id::text, current_step, error FROM jobs WHERE status = 'failed'""")).all()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def failed_variant_count(conn: Connection, job_id: str) -> tuple[int, int]:
    """(failed, all) variants of a job."""
    row = conn.execute(sa.text("SELECT count(*) FILTER (WHERE status = 'failed'), count(*) "
                               "FROM jobs_variants WHERE job_id = :j"), {"j": job_id}).one()
    return row[0], row[1]


def finished_partitions(conn: Connection, last_variant_stage: str, last_job_stage: str) -> list[tuple[str, str]]:
    """(level, key) of every variant and job done at the last stage of its level."""
    rows = conn.execute(sa.text(
        """SELECT 'variant', job_variants_id::text FROM jobs_variants WHERE status = 'done' AND current_step = :lv
           UNION ALL SELECT 'job', job_id::text FROM jobs WHERE status = 'done' AND current_step = :lj"""),
        {"lv": last_variant_stage, "lj": last_job_stage}).all()
    return [(r[0], r[1]) for r in rows]


def partition_removal_marks(conn: Connection) -> list[tuple[str, str, bool]]:
    """(level, key, removed) of every variant and job: whether prune removed its job's Dagster
    partitions since the job finished."""
    rows = conn.execute(sa.text(
        """SELECT 'variant', v.job_variants_id::text,
                  (j.partitions_removed_at IS NOT NULL AND j.partitions_removed_at >= j.finished_at)
             FROM jobs_variants v JOIN jobs j USING (job_id)
           UNION ALL
           SELECT 'job', job_id::text, (partitions_removed_at IS NOT NULL AND partitions_removed_at >= finished_at)
             FROM jobs""")).all()
    return [(r[0], r[1], r[2]) for r in rows]


def named_paths(conn: Connection, paths: Sequence[str]) -> set[str]:
    """Those of ``paths`` that any image row names (pruned or not)."""
    return {p for (p,) in conn.execute(sa.text("SELECT path FROM image_assets WHERE path = ANY(:p)"),
                                       {"p": list(paths)})}


def job_result_row(conn: Connection, job_id: str) -> tuple[str, str, str | None, int, bool, bool]:
    """(current_step, status, error, expected_variants, partitions removed, files pruned) of a job."""
    row = conn.execute(sa.text("""SELECT current_step, status, error, expected_variants,
                                         partitions_removed_at IS NOT NULL, pruned_at IS NOT NULL
                                    FROM jobs WHERE job_id = :j"""), {"j": job_id}).one()
    return row[0], row[1], row[2], row[3], row[4], row[5]


def variant_result_rows(conn: Connection, job_id: str) -> list[tuple[str, str, str, str | None]]:
    """(job_variants_id, current_step, status, overlaid image path) of a job's variants."""
    rows = conn.execute(sa.text(
        """SELECT v.job_variants_id::text, v.current_step, v.status, a.path FROM jobs_variants v
             LEFT JOIN image_assets a ON a.image_asset_id = v.overlaid_img_asset_id WHERE v.job_id = :j"""),
        {"j": job_id}).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def instagram_feed(conn: Connection, job_id: str) -> tuple[str, list[str]] | None:
    """(instagram_ad_copy, hashtags) of a job's feed, or None."""
    row = conn.execute(sa.text("SELECT instagram_ad_copy, hashtags FROM instagram_feeds WHERE job_id = :j"),
                       {"j": job_id}).first()
    return (row[0], list(row[1])) if row else None


def variant_state(conn: Connection, variant_id: str) -> tuple[str, str, str | None] | None:
    """(current_step, status, error) of a variant, or None when it is gone."""
    row = conn.execute(sa.text("SELECT current_step, status, error FROM jobs_variants WHERE job_variants_id = :v"),
                       {"v": variant_id}).first()
    return (row[0], row[1], row[2]) if row else None


def partial_jobs(conn: Connection) -> list[tuple[str, bool, int, int]]:
    """(job_id, has inputs, variants, expected_variants) of jobs missing their inputs or some variants."""
    rows = conn.execute(sa.text(
        """SELECT j.job_id::text, i.job_id IS NOT NULL, count(v.job_variants_id), j.expected_variants
             FROM jobs j LEFT JOIN job_inputs i USING (job_id) LEFT JOIN jobs_variants v USING (job_id)
            GROUP BY j.job_id, i.job_id, j.expected_variants
           HAVING i.job_id IS NULL OR count(v.job_variants_id) < j.expected_variants""")).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


# --- The soak's workload and report ------------------------------------------------------------


def recently_finished_variants(conn: Connection, last_variant_stage: str) -> list[str]:
    """Variants done at ``last_variant_stage`` of jobs that ended in the last 100 s and whose
    partitions prune has not removed (what a person re-renders)."""
    return [r[0] for r in conn.execute(sa.text(
        """SELECT v.job_variants_id::text FROM jobs_variants v JOIN jobs j USING (job_id)
            WHERE v.current_step = :last AND v.status = 'done' AND j.partitions_removed_at IS NULL
              AND j.status IN ('done', 'failed') AND j.finished_at > now() - interval '100 seconds'
            ORDER BY v.job_variants_id"""), {"last": last_variant_stage})]


def failed_keys(conn: Connection) -> list[str]:
    """Keys of every failed variant and job, sorted."""
    return [r[0] for r in conn.execute(sa.text(
        """SELECT job_variants_id::text FROM jobs_variants WHERE status = 'failed'
           UNION ALL SELECT job_id::text FROM jobs WHERE status = 'failed' ORDER BY 1"""))]


def last_commits_in_flight(conn: Connection, last_variant_stage: str, last_job_stage: str) -> dict[str, int]:
    """Partitions not terminal now -> their last committed attempt id (0: none yet). A job counts
    once it is past its variants (at a job-level stage, or its variants all done)."""
    rows = conn.execute(sa.text(
        """WITH open AS (
               SELECT job_variants_id AS k FROM jobs_variants
                WHERE NOT (status = 'failed' OR (status = 'done' AND current_step = :lv))
               UNION ALL
               SELECT job_id FROM jobs
                WHERE NOT (status = 'failed' OR (status = 'done' AND current_step = :lj))
                  AND (current_step IN (SELECT name FROM pipeline_stages WHERE level = 'job')
                       OR (current_step = :lv AND status = 'done')))
           SELECT o.k::text, coalesce(max(a.attempt_id) FILTER (WHERE a.outcome = 'done'), 0)
             FROM open o LEFT JOIN stage_attempts a ON coalesce(a.job_variants_id, a.job_id) = o.k
            GROUP BY o.k"""), {"lv": last_variant_stage, "lj": last_job_stage}).all()
    return {k: int(done) for k, done in rows}


def open_job_count(conn: Connection, last_job_stage: str) -> int:
    """Jobs neither failed nor done at ``last_job_stage``."""
    n: int = conn.execute(sa.text(
        "SELECT count(*) FROM jobs WHERE NOT (status = 'failed' OR "
        "(status = 'done' AND current_step = :last))"), {"last": last_job_stage}).scalar_one()
    return n


def running_attempt_count(conn: Connection) -> int:
    """Attempts still ``running``."""
    n: int = conn.execute(sa.text("SELECT count(*) FROM stage_attempts WHERE outcome = 'running'")).scalar_one()
    return n


def finished_job_ids(conn: Connection) -> list[str]:
    """Jobs that have finished at least once, oldest first."""
    return [r[0] for r in conn.execute(sa.text(
        "SELECT job_id::text FROM jobs WHERE finished_at IS NOT NULL ORDER BY created_at"))]


def job_rows(conn: Connection) -> list[tuple[str, str, str, str, datetime, datetime | None, int]]:
    """(job_id, tenant_id, current_step, status, created_at, finished_at, expected_variants) of every job, oldest first."""
    rows = conn.execute(sa.text(
        """SELECT job_id::text, tenant_id, current_step, status, created_at, finished_at, expected_variants
             FROM jobs ORDER BY created_at""")).all()
    return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]


def variant_outcome_rows(conn: Connection) -> list[tuple[str, str, str | None]]:
    """(current_step, status, error) of every variant."""
    return [(r[0], r[1], r[2]) for r in conn.execute(sa.text(
        "SELECT current_step, status, error FROM jobs_variants")).all()]


def attempt_outcome_counts(conn: Connection) -> dict[str, int]:
    """How many attempts ended (or are) in each outcome."""
    return {o: n for o, n in conn.execute(sa.text(
        "SELECT outcome, count(*) FROM stage_attempts GROUP BY outcome")).all()}


def first_feed_times(conn: Connection, last_job_stage: str) -> list[tuple[datetime, datetime]]:
    """(created_at, first committed ``last_job_stage`` attempt's end) of every job that has one."""
    rows = conn.execute(sa.text(
        """SELECT j.created_at, min(a.finished_at) FROM jobs j
             JOIN stage_attempts a ON a.job_id = j.job_id AND a.level = 'job' AND a.stage = :last
                                  AND a.outcome = 'done'
            GROUP BY j.job_id, j.created_at"""), {"last": last_job_stage}).all()
    return [(r[0], r[1]) for r in rows]


def attempt_spans(conn: Connection) -> list[tuple[str, str, datetime, datetime | None, str, str | None]]:
    """(partition, stage, started_at, finished_at, outcome, run_id) of every attempt but stale
    runs' ``skipped`` records, oldest first."""
    rows = conn.execute(sa.text(
        """SELECT coalesce(job_variants_id, job_id)::text, stage, started_at, finished_at, outcome, run_id
             FROM stage_attempts WHERE outcome <> 'skipped' ORDER BY attempt_id""")).all()
    return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


def finish_times(conn: Connection) -> dict[str, datetime]:
    """Key -> finished_at of every variant and job that has finished."""
    return {k: f for k, f in conn.execute(sa.text(
        """SELECT job_variants_id::text, finished_at FROM jobs_variants WHERE finished_at IS NOT NULL
           UNION ALL SELECT job_id::text, finished_at FROM jobs WHERE finished_at IS NOT NULL"""))}


def final_failure_times(conn: Connection) -> list[tuple[str, datetime]]:
    """(partition, finished_at) of every attempt that failed or was lost with no retry after it, oldest first."""
    rows = conn.execute(sa.text(
        """SELECT coalesce(job_variants_id, job_id)::text, finished_at FROM stage_attempts
            WHERE outcome IN ('failed', 'lost') AND will_retry = false AND finished_at IS NOT NULL
            ORDER BY attempt_id""")).all()
    return [(r[0], r[1]) for r in rows]


# --- The benchmarks' measurements ----------------------------------------------------------------


def event_count(conn: Connection) -> int:
    """Outbox events retained."""
    n: int = conn.execute(sa.text("SELECT count(*) FROM pipeline_events")).scalar_one()
    return n


def job_and_variant_counts(conn: Connection) -> tuple[int, int]:
    """(jobs, variants)."""
    row = conn.execute(sa.text("SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM jobs_variants)")).one()
    return row[0], row[1]


def oldest_job_id(conn: Connection) -> str:
    """The first job submitted (the table must have one)."""
    job_id: str = conn.execute(sa.text("SELECT job_id::text FROM jobs ORDER BY created_at LIMIT 1")).scalar_one()
    return job_id


def last_event_position(conn: Connection) -> tuple[int, int] | None:
    """(xid, id) of the last outbox event in the outbox reader's order, or None when there is none."""
    # Ordered by the xid8 column itself: its text form would sort "9" after "10".
    row = conn.execute(sa.text("SELECT xid::text AS xid_text, id FROM pipeline_events "
                               "ORDER BY pipeline_events.xid DESC, id DESC LIMIT 1")).first()
    return (int(row[0]), row[1]) if row else None


def last_event_time_of_jobs(conn: Connection, job_ids: Sequence[str]) -> float | None:
    """When the latest outbox event of these jobs was written (epoch seconds)."""
    at: float | None = conn.execute(sa.text(
        "SELECT extract(epoch FROM max(created_at))::float8 FROM pipeline_events "
        "WHERE job_id = ANY(CAST(:j AS uuid[]))"), {"j": list(job_ids)}).scalar_one()
    return at


def database_activity(conn: Connection) -> tuple[int, int]:
    """(committed transactions, rows inserted) so far in the connection's database (any database:
    the benchmarks read Dagster's with it)."""
    row = conn.execute(sa.text("SELECT xact_commit, tup_inserted FROM pg_stat_database "
                               "WHERE datname = current_database()")).one()
    return int(row[0]), int(row[1])


def own_variant_event(conn: Connection) -> tuple[int, float] | None:
    """(id, created_at epoch) of the last variant event this transaction wrote, or None."""
    row = conn.execute(sa.text(
        "SELECT id, EXTRACT(EPOCH FROM created_at)::float8 FROM pipeline_events "
        "WHERE xid = pg_current_xact_id() AND kind = 'variant' ORDER BY id DESC LIMIT 1")).first()
    return (int(row[0]), float(row[1])) if row else None


def sensor_tick_bodies(conn: Connection) -> list[str]:
    """The serialized sensor ticks in a Dagster storage database, oldest first."""
    return [r[0] for r in conn.execute(sa.text(
        "SELECT tick_body FROM job_ticks WHERE type = 'SENSOR' ORDER BY id")).all()]


def all_job_ids(conn: Connection) -> set[str]:
    """Every job id."""
    return {r[0] for r in conn.execute(sa.text("SELECT job_id::text FROM jobs"))}


def variants_by_job(conn: Connection) -> list[tuple[str, str]]:
    """(job_id, job_variants_id) of every variant, job by job in creation order."""
    return [(r[0], r[1]) for r in conn.execute(sa.text(
        "SELECT job_id::text, job_variants_id::text FROM jobs_variants ORDER BY job_id, creation_order")).all()]


def job_count(conn: Connection) -> int:
    """Jobs in the table."""
    n: int = conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one()
    return n


def live_done_job_count(conn: Connection) -> int:
    """Done jobs that prune has touched in no way."""
    n: int = conn.execute(sa.text("SELECT count(*) FROM jobs WHERE partitions_removed_at IS NULL "
                                  "AND pruned_at IS NULL AND status = 'done'")).scalar_one()
    return n


def live_done_job_at(conn: Connection, offset: int, *, other_than: str) -> str:
    """The ``offset``-th (by id) done job prune has not touched, ``other_than`` left out."""
    job_id: str = conn.execute(sa.text(
        "SELECT job_id::text FROM jobs WHERE job_id <> :t AND partitions_removed_at IS NULL "
        "AND pruned_at IS NULL AND status = 'done' ORDER BY job_id OFFSET :o LIMIT 1"),
        {"t": other_than, "o": offset}).scalar_one()
    return job_id


def first_variant_of(conn: Connection, job_id: str) -> str:
    """A job's first variant."""
    variant_id: str = conn.execute(sa.text(
        "SELECT job_variants_id::text FROM jobs_variants WHERE job_id = :j ORDER BY creation_order LIMIT 1"),
        {"j": job_id}).scalar_one()
    return variant_id


def stage_time_of_jobs(conn: Connection, job_ids: Sequence[str]) -> tuple[float, int]:
    """(seconds spent in stage attempts, attempts failed for good) of these jobs."""
    row = conn.execute(sa.text(
        """SELECT COALESCE(sum(EXTRACT(EPOCH FROM finished_at - started_at)), 0),
                  count(*) FILTER (WHERE outcome = 'failed' AND NOT will_retry)
             FROM stage_attempts WHERE job_id = ANY(CAST(:jobs AS uuid[]))"""), {"jobs": list(job_ids)}).one()
    return float(row[0]), int(row[1])


def mean_stage_times_of_jobs(conn: Connection, job_ids: Sequence[str]) -> dict[str, float]:
    """Stage -> mean attempt time (s) over these jobs."""
    rows = conn.execute(sa.text(
        """SELECT stage, avg(EXTRACT(EPOCH FROM finished_at - started_at))
             FROM stage_attempts WHERE job_id = ANY(CAST(:jobs AS uuid[])) GROUP BY stage"""),
        {"jobs": list(job_ids)}).all()
    return {stage: float(mean) for stage, mean in rows}


def running_attempt_count_at(conn: Connection, stage: str) -> int:
    """Attempts at ``stage`` still ``running``."""
    n: int = conn.execute(sa.text("SELECT count(*) FROM stage_attempts WHERE stage = :s AND "
                                  "outcome = 'running'"), {"s": stage}).scalar_one()
    return n


def ended_job_count(conn: Connection, job_ids: Sequence[str], last_job_stage: str) -> int:
    """Those of these jobs failed or done at ``last_job_stage``."""
    n: int = conn.execute(sa.text(
        """SELECT count(*) FROM jobs WHERE job_id = ANY(CAST(:j AS uuid[]))
             AND (status = 'failed' OR (status = 'done' AND current_step = :last))"""),
        {"j": list(job_ids), "last": last_job_stage}).scalar_one()
    return n


def done_job_count(conn: Connection, job_ids: Sequence[str]) -> int:
    """Those of these jobs whose status is ``done``."""
    n: int = conn.execute(sa.text("SELECT count(*) FROM jobs WHERE job_id = ANY(CAST(:j AS uuid[])) "
                                  "AND status = 'done'"), {"j": list(job_ids)}).scalar_one()
    return n


def stages_committed_twice(conn: Connection) -> int:
    """(partition, stage) pairs with more than one ``done`` attempt."""
    n: int = conn.execute(sa.text(
        """SELECT count(*) FROM (
            SELECT 1 FROM stage_attempts WHERE outcome = 'done'
             GROUP BY coalesce(job_variants_id, job_id), stage HAVING count(*) > 1) d""")).scalar_one()
    return n
