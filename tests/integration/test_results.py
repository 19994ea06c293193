"""The results contract and the job gallery, through the real stages on a real PostgreSQL.

One job of two variants is followed from submission: queued (nothing exists yet), running (one
variant finished, one failed), and finished partly failed (the job's copy written, the failed
variant with its reason). At each point ``results --json`` answers with what exists; at the end
the job asset's gallery and the ``--html`` file show every variant.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from tests.fixtures.pipeline import submit_sample
from variant_pipeline import cli
from variant_pipeline.assets.partitions import job_partitions, variant_partitions
from variant_pipeline.assets.stage_assets import JOB_ASSETS, VARIANT_ASSETS
from variant_pipeline.data.engine import get_engine
from variant_pipeline.data.storage import AssetStore
from variant_pipeline.quality import CHECKS
from variant_pipeline.resources import default_resources


def _materialize(instance, assets, key: str, selection: list[str] | None = None):
    return dg.materialize(assets, partition_key=key, instance=instance, resources=default_resources(),
                          selection=selection, raise_on_error=False)


def _results_json(capsys, job_id: str) -> dict:
    assert cli.main(["results", job_id, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_results_of_a_queued_a_running_and_a_partly_failed_job(pipeline_env, dagster_instance, capsys,
                                                                tmp_path: Path) -> None:
    from variant_pipeline.config import load_settings

    engine = get_engine(pipeline_env.app_url)
    job = submit_sample(pipeline_env.app_url, variants=2)
    job_id, (good, bad) = str(job.job_id), [str(v) for v in job.variant_ids]
    dagster_instance.add_dynamic_partitions(variant_partitions.name, [good, bad])
    dagster_instance.add_dynamic_partitions(job_partitions.name, [job_id])

    queued = _results_json(capsys, job_id)
    assert (queued["job_id"], queued["state"], queued["instagram_copy"], queued["hashtags"]) == (job_id, "queued", None, [])
    assert [v["state"] for v in queued["variants"]] == ["queued", "queued"]
    assert all(c["outcome"] == "pending" for v in queued["variants"] for c in v["checks"])
    assert queued["variants"][0]["image_path"] is None

    # Variant 2's generated image disappears: its next stage fails at once, with the reason.
    assert _materialize(dagster_instance, VARIANT_ASSETS, good).success
    assert _materialize(dagster_instance, VARIANT_ASSETS, bad, ["img_gen"]).success
    store = AssetStore.from_settings(load_settings())
    with engine.connect() as conn:
        lost = conn.exec_driver_sql(
            f"SELECT a.path FROM jobs_variants v JOIN image_assets a ON a.image_asset_id = v.img_asset_id "
            f"WHERE v.job_variants_id = '{bad}'").scalar_one()
    store.path_for(lost).unlink()
    running = _results_json(capsys, job_id)  # between the two: one variant done, one on its way
    assert running["state"] == "running"
    assert running["variants"][0]["state"] == "done" and Path(running["variants"][0]["image_path"]).is_file()
    assert {c["outcome"] for c in running["variants"][1]["checks"]} == {"pending"}
    assert not _materialize(dagster_instance, VARIANT_ASSETS, bad, [a.key.path[0] for a in VARIANT_ASSETS[1:]]).success

    feed_run = _materialize(dagster_instance, JOB_ASSETS, job_id)
    assert feed_run.success
    done = _results_json(capsys, job_id)
    assert (done["state"], done["stage"], done["status"]) == ("done", "instagram_feed_gen", "done")
    assert done["instagram_copy"] and done["hashtags"] and done["ad_copy_kor"]
    first, second = done["variants"]
    assert first["state"] == "done" and Image.open(first["image_path"]).size == (256, 256)
    assert [c["name"] for c in first["checks"]] == [c.name for c in CHECKS]
    assert all(c["outcome"] in ("passed", "failed", "not_evaluated") for c in first["checks"])
    assert 0.0 <= first["scores"]["ocr_accuracy"] <= 1.0 and first["scores"]["contrast_ratio"] >= 1.0
    assert second["state"] == "failed" and second["stage"] == "vlm_analyze"
    assert "not found" in second["error"] and second["image_path"] is None

    # The gallery: one metadata entry on the job asset, both variants side by side.
    metadata = feed_run.asset_materializations_for_node("instagram_feed_gen")[0].metadata
    assert not any(k.startswith("image: ") for k in metadata)  # no more one link per variant
    gallery = metadata["gallery"].value
    assert "| | variant 1 | variant 2 |" in gallery
    assert gallery.count("](data:image/jpeg;base64,") == 1  # the failed variant has no image...
    assert f"failed at vlm_analyze: {second['error'][:40]}" in gallery  # ...but its reason
    for check in CHECKS:
        assert f"| check {check.name} |" in gallery
    assert first["checks"][1]["summary"][:30] in gallery
    assert f"**Korean ad copy**: {done['ad_copy_kor']}" in gallery
    assert " ".join(done["hashtags"]) in gallery
    assert len(gallery) < 60_000  # it lives in Dagster's event log

    # The HTML file is self-contained: the image is embedded, and decodes.
    page = tmp_path / "job.html"
    assert cli.main(["results", job_id, "--html", str(page)]) == 0
    assert f"gallery written to {page}" in capsys.readouterr().out
    text = page.read_text(encoding="utf-8")
    assert "src=\"http" not in text and "file:" not in text
    [uri] = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', text)
    assert Image.open(io.BytesIO(base64.b64decode(uri))).size == (256, 256)
    assert "variant 2" in text and "failed at vlm_analyze" in text


@pytest.mark.parametrize(("job_id", "message"), [
    ("not-a-job", "error: malformed job id 'not-a-job'"),
    ("00000000-0000-0000-0000-000000000000", "error: no job with id 00000000-0000-0000-0000-000000000000"),
])
def test_results_of_an_unknown_or_malformed_id_is_one_line(db_env, capsys, job_id: str, message: str) -> None:
    assert cli.main(["results", job_id, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(message) and captured.err.count("\n") == 1
