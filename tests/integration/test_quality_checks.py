"""The per-variant quality checks through the real stages: crafted images under the real overlay,
OCR, readability and IoU stages, on a real PostgreSQL and a PostgreSQL-backed Dagster instance.

Each check passes on a clean render and fails when its input is crafted to fail it; the results
are stored per variant partition (the asset's Checks tab) and with severity WARN.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import sqlalchemy as sa
from PIL import Image

from tests.fixtures.pipeline import submit_sample
from variant_pipeline.assets.partitions import variant_partitions
from variant_pipeline.assets.stage_assets import VARIANT_ASSETS
from variant_pipeline.config import load_settings
from variant_pipeline.data.engine import get_engine
from variant_pipeline.data.jobs import get_job_status
from variant_pipeline.data.storage import AssetStore
from variant_pipeline.quality import CHECKS
from variant_pipeline.resources import default_resources


def _materialize(instance, key: str, selection: list[str] | None = None):
    return dg.materialize(VARIANT_ASSETS, partition_key=key, instance=instance, resources=default_resources(),
                          selection=selection, raise_on_error=False)


def _outcomes(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _file_of(engine, variant_id: str, column: str) -> str:
    with engine.connect() as conn:
        path = conn.execute(sa.text(f"SELECT a.path FROM jobs_variants v JOIN image_assets a "
                                    f"ON a.image_asset_id = v.{column} WHERE v.job_variants_id = :v"),
                            {"v": variant_id}).scalar_one()
    return str(AssetStore.from_settings(load_settings()).path_for(path))


def _layout(engine, variant_id: str) -> dict:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT layout FROM overlay_layouts WHERE job_variants_id = :v"),
                            {"v": variant_id}).scalar_one()


def test_each_check_passes_on_a_clean_render_and_fails_on_a_crafted_one(pipeline_env, dagster_instance) -> None:
    engine = get_engine(pipeline_env.app_url)
    job = submit_sample(pipeline_env.app_url, variants=1)
    key = str(job.variant_ids[0])
    dagster_instance.add_dynamic_partitions(variant_partitions.name, [key])

    # A plain light background instead of the tiny model's noise: the overlay is drawn on it cleanly.
    assert _materialize(dagster_instance, key, ["img_gen"]).success
    generated = _file_of(engine, key, "img_asset_id")
    size = Image.open(generated).size
    Image.new("RGB", size, (236, 232, 222)).save(generated)
    clean = _materialize(dagster_instance, key, [a.key.path[0] for a in VARIANT_ASSETS[1:]])
    assert clean.success
    outcomes = _outcomes(clean)
    assert set(outcomes) == {c.name for c in CHECKS}
    for name in ("ocr_accuracy", "wcag_contrast_mean", "wcag_contrast_worst_case", "text_clear_of_forbidden_objects"):
        assert outcomes[name].passed, (name, outcomes[name].description)
        assert outcomes[name].severity == dg.AssetCheckSeverity.WARN
        assert outcomes[name].partition == key  # tied to the variant partition
    # The tiny judge answers gibberish: the check says so instead of passing.
    judge = outcomes["judge_on_brief"]
    assert not judge.passed and judge.description.startswith("not evaluated: the judge's answer gave no verdict")
    assert judge.metadata["outcome"].value == "not_evaluated"

    layout = _layout(engine, key)
    text_rgb = tuple(layout["text_color_rgb"])
    x1, y1, x2, y2 = layout["text_bbox_px"]

    # OCR: the overlaid image loses its text (it becomes the plain background): nothing reads back.
    Image.open(generated).save(_file_of(engine, key, "overlaid_img_asset_id"))
    ocr = _outcomes(_materialize(dagster_instance, key, ["ocr_eval"]))["ocr_accuracy"]
    assert not ocr.passed and ocr.metadata["value"].value < load_settings().check_min_ocr_accuracy
    assert ocr.description.startswith("OCR accuracy 0.00 <")

    # Readability, worst case only: every third column under the text is the text's own colour.
    striped = np.array(Image.new("RGB", size, (236, 232, 222)))
    striped[y1:y2, x1:x2:3] = text_rgb
    Image.fromarray(striped).save(generated)
    stripes = _outcomes(_materialize(dagster_instance, key, ["readability_eval"]))
    assert stripes["wcag_contrast_mean"].passed, stripes["wcag_contrast_mean"].description
    assert not stripes["wcag_contrast_worst_case"].passed
    assert "is below WCAG AA" in stripes["wcag_contrast_worst_case"].description

    # Readability, both: the background under the text is the text's colour.
    Image.new("RGB", size, text_rgb).save(generated)
    same = _outcomes(_materialize(dagster_instance, key, ["readability_eval"]))
    assert not same["wcag_contrast_mean"].passed and not same["wcag_contrast_worst_case"].passed
    assert same["wcag_contrast_mean"].metadata["value"].value < 1.01

    # IoU: a forbidden object detected right under the text.
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO detections (job_variants_id, job_id, label, class_id, score, "
                             "x1, y1, x2, y2, forbidden) VALUES (:v, :j, 'cup', 41, 0.9, :x1, :y1, :x2, :y2, true)"),
                     {"v": key, "j": str(job.job_id), "x1": x1, "y1": y1, "x2": x2, "y2": y2})
    iou = _outcomes(_materialize(dagster_instance, key, ["iou_eval"]))["text_clear_of_forbidden_objects"]
    assert not iou.passed and iou.description.startswith("text box overlaps cup with IoU")

    # The Checks tab reads the history per partition: the latest evaluation of each check is the failing one.
    for name in ("ocr_accuracy", "wcag_contrast_mean", "text_clear_of_forbidden_objects"):
        history = dagster_instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(next(c.stage for c in CHECKS if c.name == name)), name), limit=10)
        assert history[0].partition == key
        assert history[0].status.value == "FAILED"
    # A variant that fails a check (severity WARN) is still delivered.
    assert (get_job_status(engine, job.job_id).variants[0].status) == "done"
