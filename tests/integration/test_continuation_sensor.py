"""The continuation sensor against a real Dagster instance: a hand run is continued in the tick
that first sees it, however many of the pipeline's own runs succeeded just before it."""

from __future__ import annotations

import dagster as dg

from variant_pipeline.assets.dagster_internals import partition_loading_context
from variant_pipeline.assets.jobs import LAUNCHED_BY_TAG
from variant_pipeline.assets.partitions import variant_partitions
from variant_pipeline.sensors.continuation import CONTINUATION_SENSOR_NAME

# A stand-in for the overlay stage: the sensor reads only which asset keys a run materialized.
STAGE = "overlay"


@dg.asset(name=STAGE, partitions_def=variant_partitions)
def _overlay_stand_in() -> None:
    return None


def _run(instance: dg.DagsterInstance, key: str, tags: dict[str, str] | None = None) -> str:
    result = dg.materialize([_overlay_stand_in], partition_key=key, instance=instance, tags=tags or {})
    assert result.success
    return result.run_id


def _tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None):
    """One tick as the daemon evaluates it (which has the instance at hand to resolve partitions)."""
    from variant_pipeline.definitions import defs

    with partition_loading_context(dynamic_partitions_store=instance):
        return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))


def test_a_hand_run_behind_a_burst_of_pipeline_runs_is_continued_in_one_tick(dagster_instance) -> None:
    """Found by the 30-minute ray soak of seed 45952: Dagster's run-status sensor ends a tick at the
    first run its function answers, and this sensor answered every pipeline run with a skip, so
    it read one run per tick (12 a minute). At 20 successful runs a minute it fell behind without
    bound: a re-render's continuation started 3.5 minutes late by the end of the run."""
    keys = [f"v{i}" for i in range(8)]
    dagster_instance.add_dynamic_partitions(variant_partitions.name, keys)
    from variant_pipeline.definitions import defs

    sensor = defs.resolve_sensor_def(CONTINUATION_SENSOR_NAME)
    start = _tick(sensor, dagster_instance, None)  # a new sensor starts after the runs so far
    assert start.run_requests == [] and start.cursor is not None
    for key in keys[:7]:
        _run(dagster_instance, key, {LAUNCHED_BY_TAG: "outbox_sensor"})
    hand = _run(dagster_instance, keys[7])

    tick = _tick(sensor, dagster_instance, start.cursor)
    [request] = tick.run_requests
    assert (request.partition_key, request.run_key) == (keys[7], f"continue:{hand}")
    assert [k.to_user_string() for k in request.asset_selection] == [
        "vlm_judge", "ocr_eval", "readability_eval", "iou_eval"]
    # Nothing new since: the next tick asks for nothing, and never for the same run again.
    assert _tick(sensor, dagster_instance, tick.cursor).run_requests == []
