"""The stage assets against a real PostgreSQL (app data and Dagster's storage) and the tiny models."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from tests.fixtures.db import count_rows, create_job
from tests.fixtures.pipeline import submit_sample
from variant_pipeline.assets.dagster_internals import partition_loading_context
from variant_pipeline.assets.partitions import JobVariantsPartitionMapping, job_partitions, variant_partitions
from variant_pipeline.assets.stage_assets import JOB_ASSETS, VARIANT_ASSETS
from variant_pipeline.data.engine import get_engine
from variant_pipeline.data.jobs import get_job_status
from variant_pipeline.resources import default_resources
from variant_pipeline.sensors.continuation import CONTINUATION_SENSOR_NAME
from variant_pipeline.stages import VARIANT_STAGES
from variant_pipeline.state.transitions import continuation_start


def _materialize(instance, assets, key: str, selection: list[str] | None = None):
    return dg.materialize(assets, partition_key=key, instance=instance, resources=default_resources(),
                          selection=selection, raise_on_error=False)


def _materialization_count(instance, asset: str, key: str) -> int:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=100
    ).records
    return len(records)


def _sensor_tick(sensor, instance, cursor: str | None):
    from variant_pipeline.definitions import defs

    with partition_loading_context(dynamic_partitions_store=instance):
        return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))


OUTPUT_TABLES = ("image_assets", "detection_runs", "planner_proposals", "overlay_layouts", "vlm_traces",
                 "evaluations")


def _output_counts(engine) -> dict[str, int]:
    return {t: count_rows(engine, t) for t in OUTPUT_TABLES}


def test_variant_stages_write_one_answer_per_stage_and_rerun_replaces_it(pipeline_env, dagster_instance) -> None:
    engine = get_engine(pipeline_env.app_url)
    job = submit_sample(pipeline_env.app_url, variants=1)
    key = str(job.variant_ids[0])
    dagster_instance.add_dynamic_partitions(variant_partitions.name, [key])

    result = _materialize(dagster_instance, VARIANT_ASSETS, key)
    assert result.success
    status = get_job_status(engine, job.job_id)
    assert (status.variants[0].stage, status.variants[0].status) == ("iou_eval", "done")
    assert (status.stage, status.status) == ("iou_eval", "done")  # the one variant rolled the job up
    counts = _output_counts(engine)
    # product photo + generated + forbidden mask + planner viz + overlaid + glyph mask
    assert counts == {"image_assets": 6, "detection_runs": 1, "planner_proposals": 1, "overlay_layouts": 1,
                      "vlm_traces": 2, "evaluations": 3}
    for stage in VARIANT_STAGES:
        assert _materialization_count(dagster_instance, stage.name, key) == 1

    # Metadata people look at: thumbnails, scores, and each model loaded once in this run.
    overlay_md = result.asset_materializations_for_node("overlay")[0].metadata
    assert overlay_md["image: overlaid"].value.startswith("![overlaid](data:image/jpeg;base64,")
    assert len(overlay_md["image: overlaid"].value) < 40_000
    loads = result.asset_materializations_for_node("iou_eval")[0].metadata["model_loads_in_run"].value
    assert loads and all(n == 1 for n in loads.values())
    ocr_md = result.asset_materializations_for_node("ocr_eval")[0].metadata
    assert 0.0 <= ocr_md["ocr_accuracy"].value <= 1.0

    # Every state change of this run is tagged with the run id as its origin.
    with engine.connect() as conn:
        origins = conn.execute(
            sa.text("SELECT DISTINCT origin FROM pipeline_events WHERE job_variants_id = :v AND origin <> 'demo:submit' "
                    "AND new_status <> 'queued'"),
            {"v": key},
        ).scalars().all()
    assert origins == [f"dagster-run:{result.run_id}"]

    # A person re-renders the overlay by hand: outputs are replaced, not duplicated...
    from variant_pipeline.definitions import defs

    sensor = defs.resolve_sensor_def(CONTINUATION_SENSOR_NAME)
    start = _sensor_tick(sensor, dagster_instance, None)  # the continuation sensor, started before it
    manual = _materialize(dagster_instance, VARIANT_ASSETS, key, selection=["overlay"])
    assert manual.success
    assert _output_counts(engine) == counts
    assert _materialization_count(dagster_instance, "overlay", key) == 2  # history keeps both runs
    assert _materialization_count(dagster_instance, "vlm_judge", key) == 1

    # ...and the continuation sensor carries that partition downstream once, from vlm_judge.
    [request] = _sensor_tick(sensor, dagster_instance, start.cursor).run_requests
    assert request.partition_key == key
    assert request.run_key == f"continue:{manual.run_id}"
    assert [k.to_user_string() for k in request.asset_selection] == [
        "vlm_judge", "ocr_eval", "readability_eval", "iou_eval"
    ]


def test_continuation_starts_after_the_furthest_materialized_stage() -> None:
    assert continuation_start(["overlay"]) == "vlm_judge"
    assert continuation_start(["planner", "overlay"]) == "vlm_judge"
    assert continuation_start(["iou_eval"]) is None
    assert continuation_start(["ad_copy_gen_kor"]) == "instagram_feed_gen"
    assert continuation_start([]) is None


def test_broken_product_photo_fails_img_gen_with_the_reason_stored(pipeline_env, dagster_instance) -> None:
    engine = get_engine(pipeline_env.app_url)
    job = submit_sample(pipeline_env.app_url, variants=1)
    key = str(job.variant_ids[0])
    from variant_pipeline.config import load_settings
    from variant_pipeline.data.storage import AssetStore

    with engine.connect() as conn:
        path = conn.execute(sa.text("SELECT path FROM image_assets WHERE image_asset_id = :a"),
                            {"a": str(job.product_image_asset_id)}).scalar_one()
    AssetStore.from_settings(load_settings()).path_for(path).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dagster_instance.add_dynamic_partitions(variant_partitions.name, [key])

    result = _materialize(dagster_instance, VARIANT_ASSETS, key)
    assert not result.success
    variant = get_job_status(engine, job.job_id).variants[0]
    assert (variant.stage, variant.status) == ("img_gen", "failed")
    assert "product photo" in variant.error and "not a readable image" in variant.error
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "not a readable image" in failure.event_specific_data.error.message
    assert _materialization_count(dagster_instance, "img_gen", key) == 0
    assert count_rows(engine, "image_assets") == 1  # only the (broken) product photo


def test_job_stages_refuse_a_job_with_no_finished_variant(pipeline_env, dagster_instance) -> None:
    engine = get_engine(pipeline_env.app_url)
    job = create_job(engine, variants=2)
    key = str(job.job_id)
    dagster_instance.add_dynamic_partitions(job_partitions.name, [key])
    result = _materialize(dagster_instance, JOB_ASSETS, key)
    assert not result.success
    status = get_job_status(engine, job.job_id)
    assert (status.stage, status.status) == ("ad_copy_gen_kor", "failed")
    assert "no variant that finished iou_eval" in status.error
    assert count_rows(engine, "instagram_feeds") == 0


def test_job_partition_depends_on_exactly_its_own_variants(pipeline_env, dagster_instance) -> None:
    engine = get_engine(pipeline_env.app_url)
    first, second = create_job(engine, variants=3), create_job(engine, variants=2)
    variant_keys = [str(v) for v in first.variant_ids + second.variant_ids]
    dagster_instance.add_dynamic_partitions(variant_partitions.name, variant_keys)
    dagster_instance.add_dynamic_partitions(job_partitions.name, [str(first.job_id), str(second.job_id)])
    mapping = JobVariantsPartitionMapping()
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
        job_partitions.subset_with_partition_keys([str(first.job_id)]), job_partitions, variant_partitions,
        dynamic_partitions_store=dagster_instance,
    )
    assert set(upstream.partitions_subset.get_partition_keys()) == {str(v) for v in first.variant_ids}
    downstream = mapping.get_downstream_partitions_for_partitions(
        variant_partitions.subset_with_partition_keys([str(second.variant_ids[1])]), variant_partitions,
        job_partitions, dynamic_partitions_store=dagster_instance,
    )
    assert set(downstream.get_partition_keys()) == {str(second.job_id)}


def test_the_mapping_answers_alike_for_few_and_many_keys_and_names_removed_partitions(
    pipeline_env, dagster_instance
) -> None:
    """One job's few variants and many jobs' variants (a backfill) give the same answer, and a
    variant whose partition is gone is named as required but nonexistent."""
    engine = get_engine(pipeline_env.app_url)
    jobs = [create_job(engine, variants=3) for _ in range(23)]
    variant_keys = [str(v) for job in jobs for v in job.variant_ids]
    assert len(variant_keys) == 69
    dagster_instance.add_dynamic_partitions(variant_partitions.name, variant_keys)
    dagster_instance.add_dynamic_partitions(job_partitions.name, [str(j.job_id) for j in jobs])
    removed = str(jobs[0].variant_ids[2])
    dagster_instance.delete_dynamic_partition(variant_partitions.name, removed)
    mapping = JobVariantsPartitionMapping()

    def upstream(job_keys: list[str]):
        return mapping.get_upstream_mapped_partitions_result_for_partitions(
            job_partitions.subset_with_partition_keys(job_keys), job_partitions, variant_partitions,
            dynamic_partitions_store=dagster_instance,
        )

    one = upstream([str(jobs[0].job_id)])
    assert set(one.partitions_subset.get_partition_keys()) == {str(v) for v in jobs[0].variant_ids[:2]}
    assert set(one.required_but_nonexistent_subset.get_partition_keys()) == {removed}
    every = upstream([str(j.job_id) for j in jobs])
    assert set(every.partitions_subset.get_partition_keys()) == set(variant_keys) - {removed}
    assert set(every.required_but_nonexistent_subset.get_partition_keys()) == {removed}
    dagster_instance.delete_dynamic_partition(job_partitions.name, str(jobs[1].job_id))
    downstream = mapping.get_downstream_partitions_for_partitions(
        variant_partitions.subset_with_partition_keys(variant_keys), variant_partitions, job_partitions,
        dynamic_partitions_store=dagster_instance,
    )
    assert set(downstream.get_partition_keys()) == {str(j.job_id) for j in jobs} - {str(jobs[1].job_id)}


@pytest.mark.parametrize("bad_key", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_unknown_partition_fails_clearly(pipeline_env, dagster_instance, bad_key: str) -> None:
    dagster_instance.add_dynamic_partitions(variant_partitions.name, [bad_key])
    result = _materialize(dagster_instance, VARIANT_ASSETS, bad_key, selection=["planner"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    message = failure.event_specific_data.error.message
    assert "planner failed for" in message and ("bad partition key" in message or "does not exist" in message)
