"""The ``ray`` model backend on a real local Ray head (loopback) serving the tiny bundle.

Batching, loads and replicas are read from the deployments' own counters, never from timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest
from PIL import Image

from tests.fixtures.pipeline import submit_sample
from tests.fixtures.ray import replica_stats_by_family
from variant_pipeline import stages as stage_graph
from variant_pipeline.config import PROJECT_ROOT, load_settings
from variant_pipeline.data.engine import get_engine
from variant_pipeline.data.jobs import get_job_status

MODEL_LIBRARIES = ("torch", "transformers", "diffusers", "ultralytics")


# A run worker as Dagster starts one: a fresh process materializing one variant's stages. It
# reports whether a model library was imported, and what the vlm_analyze materialization recorded.
RUN_WORKER = """
import json, sys
import dagster as dg
from variant_pipeline.assets.partitions import variant_partitions
from variant_pipeline.assets.stage_assets import VARIANT_ASSETS
from variant_pipeline.resources import default_resources

key = sys.argv[1]
with dg.instance_for_test() as instance:
    instance.add_dynamic_partitions(variant_partitions.name, [key])
    result = dg.materialize(VARIANT_ASSETS, partition_key=key, instance=instance,
                            resources=default_resources(), raise_on_error=False)
    md = {k: v.value for k, v in result.asset_materializations_for_node("vlm_analyze")[0].metadata.items()
          if k.startswith("model_")} if result.success else {}
print(json.dumps({"success": result.success, "vlm_analyze": md,
                  "loaded": [m for m in sys.argv[2].split(",") if m in sys.modules]}))
"""


def test_concurrent_variant_runs_share_batched_calls_and_import_no_model_library(
        pipeline_env, use_ray_backend) -> None:
    job = submit_sample(pipeline_env.app_url, variants=3)
    before = {s["replica"]: Counter(s["batch_sizes"]) for ss in replica_stats_by_family().values() for s in ss}
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    workers = [subprocess.Popen([sys.executable, "-c", RUN_WORKER, str(v), ",".join(MODEL_LIBRARIES)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for v in job.variant_ids]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
        reports.append((json.loads(out.strip().splitlines()[-1]), err))

    for report, err in reports:
        assert report["success"], err[-3000:]
        assert report["loaded"] == [], report  # the run worker imported no model library
    status = get_job_status(get_engine(pipeline_env.app_url), job.job_id)
    assert {(v.stage, v.status) for v in status.variants} == {(stage_graph.LAST_VARIANT_STAGE, "done")}

    stats = replica_stats_by_family()
    assert set(stats) == {"vlm", "detector", "image_generator", "text_model"}
    for family, replicas in stats.items():
        for replica in replicas:  # each replica loaded its model once (the image generator: inpainting)
            assert replica["loads"] == 1, (family, replica["load_counts"])
    # Calls of different variants went into one model call: the replica's own histogram says so.
    vlm = stats["vlm"][0]
    new_sizes = Counter(vlm["batch_sizes"]) - before.get(vlm["replica"], Counter())
    assert any(int(size) > 1 for size in new_sizes), vlm["batch_sizes"]

    # Each materialization names the backend, the replica, its call's batch size, queueing, loads.
    for report, _err in reports:
        md = report["vlm_analyze"]
        assert md["model_backend"] == "ray"
        assert vlm["replica"] in md["model_replica"].split(",")  # with the text model's, for the brief
        assert md["model_replica_loads"] == 1
        assert md["model_queued_s"] >= 0 and md["model_batch_size"] >= 1
        assert md["model_loads_in_run"] == {}  # nothing loaded in the run itself


def test_a_call_past_the_stage_deadline_is_cancelled_with_a_clear_error(use_ray_backend) -> None:
    from variant_pipeline.models.serve_client import ModelCallTimeout, served

    vlm = served("vlm", load_settings(), deadline=time.monotonic())  # the stage's time is up
    with pytest.raises(ModelCallTimeout, match=r"vlm\.generate passed the stage's time limit; cancelled in Serve"):
        vlm.generate([Image.new("RGB", (32, 32))], ["describe"], max_new_tokens=4)
    assert vlm.calls == []


def test_the_metrics_endpoint_reports_each_replica(pipeline_env, use_ray_backend, dagster_instance) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from variant_pipeline.ops.metrics import PipelineCollector, exposition, ray_replica_stats

    settings = load_settings()
    collector = PipelineCollector(get_engine(pipeline_env.app_url), dagster_instance, settings,
                                  lambda: ray_replica_stats(settings))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(exposition(collector)) for s in family.samples}
    live = {stats["replica"]: stats["family"] for ss in replica_stats_by_family().values() for stats in ss}
    assert set(live.values()) == {"vlm", "detector", "image_generator", "text_model"}
    for replica, family in live.items():
        labels = (("family", family), ("replica", replica))
        # Once at most: a replica loads on its first call (this test may run before any call).
        assert samples["variant_pipeline_replica_model_loads_total", labels] in (0, 1)
        assert samples["variant_pipeline_replica_queue_length", labels] == 0  # nothing waiting now
        assert ("variant_pipeline_replica_batch_size_count", labels) in samples
    for family in set(live.values()):
        assert samples["variant_pipeline_replica_starts_total", (("family", family),)] >= 1
    assert samples["variant_pipeline_scrape_errors_total", (("part", "ray"),)] == 0
