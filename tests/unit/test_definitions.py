"""The code location as Dagster loads it: one asset per stage, lineage, executor, pools, sensors."""

from __future__ import annotations

import dagster as dg

from variant_pipeline import stages as stage_graph
from variant_pipeline.definitions import defs
from variant_pipeline.models import registry


def test_one_asset_per_stage_in_pipeline_order() -> None:
    graph = defs.resolve_asset_graph()
    names = [k.to_user_string() for k in graph.toposorted_asset_keys]
    assert names == list(stage_graph.STAGE_NAMES)
    for stage in stage_graph.STAGES[1:]:
        parents = [p.to_user_string() for p in graph.get(dg.AssetKey(stage.name)).parent_keys]
        assert parents == [stage_graph.STAGES[stage.position - 1].name]


def test_partitions_groups_and_gpu_pool() -> None:
    graph = defs.resolve_asset_graph()
    for stage in stage_graph.STAGES:
        node = graph.get(dg.AssetKey(stage.name))
        assert node.partitions_def.name == ("job_variants" if stage.level == "variant" else "jobs")
        assert node.group_name == f"{stage.level}_stages"
        assert node.description
        uses_gpu = stage.model is not None and registry.family(stage.model).accelerator
        assert (node.pools == {"gpu"}) == uses_gpu, stage.name


def test_every_job_runs_in_process() -> None:
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"
    for name in ("variant_pipeline", "job_pipeline"):
        assert defs.resolve_job_def(name).executor_def.name == "in_process"


def test_sensors_run_by_default() -> None:
    for name in ("outbox_sensor", "manual_run_continuation_sensor", "recovery_sensor", "failure_notice_sensor"):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING


def test_recovery_sensor_interval_follows_the_setting(monkeypatch) -> None:
    from variant_pipeline.sensors.recovery import build_recovery_sensor

    monkeypatch.setenv("VP_RECOVERY_INTERVAL_S", "7")
    sensor = build_recovery_sensor()
    assert sensor.minimum_interval_seconds == 7
    assert defs.resolve_sensor_def("recovery_sensor").minimum_interval_seconds == 15  # the default


def test_a_run_from_a_levels_first_stage_is_the_whole_job_and_later_ones_a_subset() -> None:
    from variant_pipeline.assets.jobs import asset_selection, run_request

    for level, stages in (("variant_pipeline", stage_graph.VARIANT_STAGES), ("job_pipeline", stage_graph.JOB_STAGES)):
        job_assets = defs.resolve_job_def(level).asset_layer.executable_asset_keys
        assert {k.to_user_string() for k in job_assets} == {s.name for s in stages}
        request = run_request(partition_key="p", start_stage=stages[0].name, run_key="k", launched_by="test")
        assert (request.job_name, request.asset_selection) == (level, None)
        later = asset_selection(stages[1].name)
        assert [k.to_user_string() for k in later] == [s.name for s in stages[1:]]
