"""The recovery sensor: dead runs failed, lost claims retried, due retries and stalls restarted.

Each tick, in this order:

1. **Dead runs.** A run of this project that Dagster thinks is STARTED but whose worker no longer
   holds its lease (``state.locks.RunLease``) is reported failed. Dagster's default run launcher
   cannot see a dead worker by itself, and a dead run would keep its GPU pool slot forever.
2. **Lost claims** (``state.recovery.recover_lost_claims``): rows running with nobody holding their
   partition lock become a recorded ``lost`` attempt and a scheduled retry (or ``failed``).
3. **Restarts** (``state.recovery.find_restarts``): due retries, rows whose latest run failed
   after they last changed (its worker died between stages, or the launch failed), and stalled
   rows, without a run in flight, get one run each, from their first unfinished stage, under a
   run key that names the attempt, the failed run or the stall, so a repeated tick never launches
   twice.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from variant_pipeline.assets.jobs import (
    PIPELINE_JOBS,
    RECOVERY_CHAIN_TAG,
    RECOVERY_REASON_TAG,
    RETRIES_RUN_TAG,
    run_request,
)
from variant_pipeline.config import load_settings
from variant_pipeline.data.engine import Engine
from variant_pipeline.data.locks import is_lock_free, run_lock_key
from variant_pipeline.resources.database import DatabaseResource
from variant_pipeline.state import recovery
from variant_pipeline.state.retry import retry_policy

RECOVERY_SENSOR_NAME = "recovery_sensor"
IMPLICIT_ASSET_JOB_NAME = "__ASSET_JOB"  # dagster's name for the job of hand-picked assets
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


# A run whose last stage ended gives its lease back as its resources are torn down, a moment
# before its worker records RUN_SUCCESS: a run that has logged nothing for this long is not finishing.
FINISHING_QUIET_S = 15.0


def fail_dead_runs(instance: dg.DagsterInstance, engine: Engine, job_names: set[str], now: float,
                   grace_s: float) -> list[str]:
    """Report STARTED runs whose worker lost its lease as failed, and free their pool slots.

    - A run stopped inside a stage (``state.recovery.runs_cut_short``: an attempt of it still
      ``running``, or ended ``lost`` or ``superseded``): dead as soon as its lease is free,
      however young (it took its lease before its first stage).
      Found by the soak: a worker killed in its run's first minute otherwise kept its partition
      busy for the rest of that minute, though its lost attempt was due again at once.
    - Any other run: a run takes its lease a few seconds after it starts, and gives it back just
      before it records its end, so a free lease counts only once the run is older than
      ``grace_s`` and has logged nothing for ``FINISHING_QUIET_S`` (a worker killed between
      stages).
    """
    started = [r for r in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
               if r.dagster_run.job_name in job_names and r.start_time is not None]
    cut_short = recovery.runs_cut_short(engine, [r.dagster_run.run_id for r in started])
    dead = []
    for record in started:
        run = record.dagster_run
        stopped_in_stage = run.run_id in cut_short
        if not stopped_in_stage and now - record.start_time < grace_s:
            continue
        with engine.begin() as conn:
            free = is_lock_free(conn, run_lock_key(run.run_id))
        if free and not stopped_in_stage and now - _last_logged(instance, run.run_id) < FINISHING_QUIET_S:
            continue  # between its teardown and its RUN_SUCCESS, perhaps: look again next tick
        if free:
            instance.report_run_failed(
                run, "recovery sensor: the run worker is gone (its database lease ended without the run finishing)"
            )
            # The worker is gone, so its GPU pool slot is not in use: give it back now rather
            # than after run_monitoring.free_slots_after_run_end_seconds.
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            dead.append(run.run_id)
    return dead


def _last_logged(instance: dg.DagsterInstance, run_id: str) -> float:
    records = instance.get_records_for_run(run_id, limit=1, ascending=False).records
    return records[0].event_log_entry.timestamp if records else 0.0


ENDED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def free_slots_of_ended_runs(instance: dg.DagsterInstance, job_names: set[str]) -> list[str]:
    """Give back concurrency pool slots still held by runs of ours that have ended.

    A worker killed inside a `gpu` stage is often failed by Dagster's own run monitoring before
    this sensor sees it STARTED; its slot then waits for run_monitoring's
    ``free_slots_after_run_end_seconds`` while every other model stage queues behind it.
    """
    storage = instance.event_log_storage
    freed = []
    for pool in storage.get_concurrency_keys():
        for run_id in storage.get_concurrency_info(pool).active_run_ids:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.job_name in job_names and run.status in ENDED:
                storage.free_concurrency_slots_for_run(run_id)
                freed.append(run_id)
    return freed


def busy_partitions(instance: dg.DagsterInstance, job_names: set[str]) -> set[str]:
    busy = set()
    for run in instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT)):
        partition = run.tags.get("dagster/partition")
        if run.job_name in job_names and partition:
            busy.add(partition)
    return busy


def latest_failed_runs(instance: dg.DagsterInstance, keys: list[str],
                       job_names: set[str]) -> dict[str, recovery.FailedRun]:
    """For each partition key, its latest run of the pipeline's jobs if that run failed."""
    found = {}
    for key in keys:
        records = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": key}), limit=1)
        if not records:
            continue
        record = records[0]
        run = record.dagster_run
        if run.job_name in job_names and run.status == dg.DagsterRunStatus.FAILURE and record.end_time:
            found[key] = recovery.FailedRun(
                run.run_id, dt.datetime.fromtimestamp(record.end_time, dt.UTC),
                chain=int(run.tags.get(RECOVERY_CHAIN_TAG, "0") or 0))
    return found


def _cancelled_last_run(instance: dg.DagsterInstance, partition_key: str, job_names: set[str]) -> str | None:
    """The id of the partition's latest run if a person cancelled it; a stall then is their choice."""
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": partition_key}), limit=1)
    if runs and runs[0].job_name in job_names and runs[0].status == dg.DagsterRunStatus.CANCELED:
        return runs[0].run_id
    return None


def build_recovery_sensor() -> dg.SensorDefinition:
    settings = load_settings()

    @dg.sensor(
        name=RECOVERY_SENSOR_NAME,
        jobs=PIPELINE_JOBS,
        minimum_interval_seconds=max(1, int(settings.recovery_interval_s)),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Fails runs whose worker died, retries stages whose worker was lost or that failed "
        "(bounded, with backoff), and restarts variants and jobs that stalled between stages.",
    )
    def recovery_sensor(context: dg.SensorEvaluationContext,
                        database: DatabaseResource) -> dg.SensorResult | dg.SkipReason:
        current = load_settings()
        engine = database.engine()
        instance = context.instance
        # Hand-started materializations from the UI run as Dagster's implicit asset job.
        job_names = {job.name for job in PIPELINE_JOBS} | {IMPLICIT_ASSET_JOB_NAME}
        now = dt.datetime.now(dt.UTC).timestamp()

        dead = fail_dead_runs(instance, engine, job_names, now, current.run_lease_grace_s)
        freed = free_slots_of_ended_runs(instance, job_names)
        lost = recovery.recover_lost_claims(engine, retry_policy(current))
        restarts = recovery.find_restarts(
            engine, current.stall_after_s, busy_partitions(instance, job_names),
            failed_runs=lambda keys: latest_failed_runs(instance, keys, job_names))
        for run_id in dead:
            context.log.warning(f"run {run_id}: worker gone, reported failed")
        for run_id in freed:
            context.log.info(f"run {run_id}: ended holding a concurrency pool slot; slot freed")
        for claim in lost:
            context.log.warning(
                f"{claim.level} {claim.partition_key}: worker of {claim.stage} attempt {claim.attempt} lost; "
                + ("retry scheduled" if claim.will_retry else "no attempts left, failed")
            )
        if not (dead or freed or lost or restarts):
            return dg.SkipReason("nothing to recover")
        run_requests = []
        for restart in restarts:
            cancelled = (_cancelled_last_run(instance, restart.partition_key, job_names)
                         if restart.why == "stalled" else None)
            if cancelled and recovery.fail_cancelled(engine, restart, cancelled):
                context.log.info(f"{restart.level} {restart.partition_key}: its run {cancelled} was cancelled; "
                                 f"{restart.start_stage} marked failed instead of restarted")
                continue
            tags = {RECOVERY_REASON_TAG: restart.why}
            if restart.chain:
                tags[RECOVERY_CHAIN_TAG] = str(restart.chain)
            if restart.retries_run:
                tags[RETRIES_RUN_TAG] = restart.retries_run  # links the retry to its failed run in the UI
            run_requests.append(run_request(
                partition_key=restart.partition_key, start_stage=restart.start_stage, run_key=restart.run_key,
                launched_by=RECOVERY_SENSOR_NAME, continues_attempts=restart.continues_attempts,
                resumes_work=True, tags=tags))
            context.log.info(f"{restart.why}: {restart.level} {restart.partition_key} from {restart.start_stage}")
        return dg.SensorResult(run_requests=run_requests)

    return recovery_sensor
