"""Hand-materialized stages continue downstream, once.

When a person materializes a stage for one partition from the UI or the command line (re-rendering one
variant's overlay, say), that run does only what was selected. When it succeeds, this sensor
launches one run for the stages after the furthest one it materialized. The pipeline's own runs
(from the outbox sensor, or continuations themselves) already carry a partition through every
remaining stage and are ignored, so nothing is ever continued twice.
"""

from __future__ import annotations

import dagster as dg

from variant_pipeline.assets.jobs import LAUNCHED_BY_TAG, PIPELINE_JOBS, SOURCE_RUN_TAG, run_request
from variant_pipeline.state.transitions import continuation_start

CONTINUATION_SENSOR_NAME = "manual_run_continuation_sensor"
CONTINUATION = "continuation"


def build_continuation_sensor() -> dg.SensorDefinition:
    @dg.run_status_sensor(
        name=CONTINUATION_SENSOR_NAME,
        run_status=dg.DagsterRunStatus.SUCCESS,
        request_jobs=PIPELINE_JOBS,
        # A run started from the command line (`dagster asset materialize -m ...`) or the Python
        # API comes from no code location (its remote_job_origin is None), and Dagster passes a
        # run-status sensor only the runs of its own location unless it monitors them all. The
        # stage assets' keys are unique in the deployment, so the check below on what the run
        # materialized is what keeps other locations' runs out.
        monitor_all_code_locations=True,
        minimum_interval_seconds=1,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="After a successful hand-started run of some stages for one partition, runs the "
        "remaining downstream stages of that partition once.",
    )
    def manual_run_continuation_sensor(context: dg.RunStatusSensorContext):
        run = context.dagster_run
        if run.tags.get(LAUNCHED_BY_TAG):
            return dg.SkipReason(f"run {run.run_id} was launched by the pipeline; it carried on by itself")
        partition = run.tags.get("dagster/partition")
        if not partition:
            return dg.SkipReason(f"run {run.run_id} has no single partition")
        # What the run actually materialized (its selection may be unset, e.g. a whole job).
        records = context.instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=1000
        ).records
        materialized = {r.event_log_entry.dagster_event.asset_key.to_user_string() for r in records}
        start = continuation_start(materialized)
        if start is None:
            return dg.SkipReason(f"run {run.run_id} materialized {sorted(materialized)}: nothing to continue")
        return run_request(partition_key=partition, start_stage=start, run_key=f"continue:{run.run_id}",
                           launched_by=CONTINUATION, tags={SOURCE_RUN_TAG: run.run_id})

    return manual_run_continuation_sensor
