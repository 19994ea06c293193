"""The asset jobs, the run tags, and the one way a pipeline run is requested.

Every sensor (outbox, continuation, recovery) asks for runs through ``run_request``: one run for
one partition, from a first stage through every later stage of its level, in that level's job.
The tags say why a run exists; the stage assets read ``continues_attempts`` from them.
"""

from __future__ import annotations

import dagster as dg

from variant_pipeline import stages as stage_graph
from variant_pipeline.assets.partitions import job_partitions, variant_partitions

# Set on every run the pipeline launches, to the sensor that launched it: a run without it was
# started by a person (the continuation sensor carries those on).
LAUNCHED_BY_TAG = "variant_pipeline/launched_by"
START_STAGE_TAG = "variant_pipeline/start_stage"
# Set ("1") on automatic retries: their attempts count on from the last failed one.
CONTINUES_ATTEMPTS_TAG = "variant_pipeline/continues_attempts"
EVENT_TAG = "variant_pipeline/event_id"  # the outbox event that asked for the run
SOURCE_RUN_TAG = "variant_pipeline/continues_run"  # the hand-started run a continuation carries on
RECOVERY_REASON_TAG = "variant_pipeline/recovery"  # "retry", "run_failed" or "stalled"
# On "run_failed" restarts: how many in a row (each after the last one's run failed again).
RECOVERY_CHAIN_TAG = "variant_pipeline/recovery_chain"
RETRIES_RUN_TAG = "variant_pipeline/retries_run"  # links a retry to its failed run in the UI
# Dagster's run queue launches the highest priority first, in submission order within one.
# Work the recovery sensor resumes (a lost worker's stage, a retry come due, a dead run's
# partition) was already under way: it goes ahead of runs for new work, so under a backlog a
# fault costs its partition the restart delay, not a place at the back of the queue.
PRIORITY_TAG = "dagster/priority"
RESUMED_WORK_PRIORITY = "1"

variant_pipeline_job = dg.define_asset_job(
    "variant_pipeline",
    selection=dg.AssetSelection.assets(*(s.name for s in stage_graph.VARIANT_STAGES)),
    partitions_def=variant_partitions,
    executor_def=dg.in_process_executor,
    description="The variant stages for one variant partition (all of them, or the ones selected).",
)
job_pipeline_job = dg.define_asset_job(
    "job_pipeline",
    selection=dg.AssetSelection.assets(*(s.name for s in stage_graph.JOB_STAGES)),
    partitions_def=job_partitions,
    executor_def=dg.in_process_executor,
    description="The job-level stages for one job partition.",
)
PIPELINE_JOBS = [variant_pipeline_job, job_pipeline_job]


def asset_selection(start_stage: str) -> list[dg.AssetKey] | None:
    """``start_stage`` and every later stage of its level; ``None`` (the whole job) when that is
    every stage of the level.

    A run of the whole job is cheaper to create: the daemon uses the job's snapshot as the code
    server reported it, instead of asking for a subset snapshot per run (docs/capacity.md: a
    third of Dagster's own cost of creating a run).
    """
    if start_stage in (stage_graph.FIRST_VARIANT_STAGE, stage_graph.FIRST_JOB_STAGE):
        return None
    return [dg.AssetKey(s.name) for s in stage_graph.stages_from(start_stage)]


def run_request(*, partition_key: str, start_stage: str, run_key: str, launched_by: str,
                continues_attempts: bool = False, resumes_work: bool = False,
                tags: dict[str, str] | None = None) -> dg.RunRequest:
    """One run for ``partition_key`` from ``start_stage`` on, in the job of the stage's level.

    ``run_key`` makes the request idempotent: Dagster launches a key once, so a repeated tick
    never starts a second run. ``resumes_work`` queues it ahead of new work (``PRIORITY_TAG``).
    """
    level = stage_graph.stage(start_stage).level
    run_tags = {LAUNCHED_BY_TAG: launched_by, START_STAGE_TAG: start_stage, **(tags or {})}
    if continues_attempts:
        run_tags[CONTINUES_ATTEMPTS_TAG] = "1"
    if resumes_work:
        run_tags[PRIORITY_TAG] = RESUMED_WORK_PRIORITY
    return dg.RunRequest(
        run_key=run_key,
        partition_key=partition_key,
        job_name=(variant_pipeline_job if level == "variant" else job_pipeline_job).name,
        asset_selection=asset_selection(start_stage),
        tags=run_tags,
    )


def continues_attempts(run_tags: dict[str, str]) -> bool:
    """Whether a run is an automatic retry, whose attempts count on from the last one."""
    return run_tags.get(CONTINUES_ATTEMPTS_TAG) == "1"


def launched_by_pipeline(run_tags: dict[str, str]) -> bool:
    """Whether a sensor launched the run for a state (else a person started it): such a run does
    nothing where its partition has moved on (``state.transitions.stale_reason``)."""
    return bool(run_tags.get(LAUNCHED_BY_TAG))
