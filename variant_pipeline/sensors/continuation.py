"""Hand-materialized stages continue downstream, once.

When a person materializes a stage for one partition from the UI or CLI (re-rendering one
variant's overlay, say), that run does only what was selected. When it succeeds, this sensor
launches one run for the stages after the furthest one it materialized. The pipeline's own runs
(from the outbox sensor, or continuations themselves) already carry a partition through every
remaining stage and are ignored, so nothing is ever continued twice.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from variant_pipeline import stages as stage_graph
from variant_pipeline.sensors.outbox import LAUNCHED_BY_TAG, START_STAGE_TAG

CONTINUATION_SENSOR_NAME = "manual_run_continuation_sensor"
CONTINUATION = "continuation"
SOURCE_RUN_TAG = "variant_pipeline/continues_run"


def continuation_start(materialized_stage_names: Iterable[str]) -> str | None:
    """The stage after the furthest materialized one, on the same level; None at the end."""
    names = [n for n in materialized_stage_names if n in stage_graph.STAGES_BY_NAME]
    if not names:
        return None
    furthest = max((stage_graph.stage(n) for n in names), key=lambda s: s.position)
    following = stage_graph.next_stage(furthest.name)
    return following.name if following else None


def build_continuation_sensor(variant_job: dg.UnresolvedAssetJobDefinition,
                              job_level_job: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        name=CONTINUATION_SENSOR_NAME,
        run_status=dg.DagsterRunStatus.SUCCESS,
        request_jobs=[variant_job, job_level_job],
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
        level = stage_graph.stage(start).level
        return dg.RunRequest(
            run_key=f"continue:{run.run_id}",
            partition_key=partition,
            job_name=(variant_job if level == "variant" else job_level_job).name,
            asset_selection=[dg.AssetKey(s.name) for s in stage_graph.stages_from(start)],
            tags={LAUNCHED_BY_TAG: CONTINUATION, SOURCE_RUN_TAG: run.run_id, START_STAGE_TAG: start},
        )

    return manual_run_continuation_sensor
