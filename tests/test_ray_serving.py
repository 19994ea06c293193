"""The ``ray`` model backend on a real local Ray head (loopback) serving the tiny bundle.

Batching, loads and replicas are read from the deployments' own counters, never from timings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import dagster as dg
import pytest
from PIL import Image

from tests.fixtures.pipeline import submit_sample
from variant_pipeline import claims, db
from variant_pipeline import stages as stage_graph
from variant_pipeline.assets.partitions import variant_partitions
from variant_pipeline.assets.stage_assets import VARIANT_ASSETS
from variant_pipeline.config import PROJECT_ROOT, SettingsError, load_settings
from variant_pipeline.resources import default_resources
from variant_pipeline.services import wait_for_job

MODEL_LIBRARIES = ("torch", "transformers", "diffusers", "ultralytics")


def _stats() -> dict[str, list[dict]]:
    from variant_pipeline.models.serving import replica_stats

    by_family: dict[str, list[dict]] = {}
    for s in replica_stats():
        by_family.setdefault(s["family"], []).append(s)
    return by_family


def test_three_concurrent_variants_share_batched_model_calls(pipeline_env, dagster_instance, use_ray_backend) -> None:
    job = submit_sample(pipeline_env.app_url, variants=3)
    keys = [str(v) for v in job.variant_ids]
    dagster_instance.add_dynamic_partitions(variant_partitions.name, keys)
    before = {s["replica"]: Counter(s["batch_sizes"]) for ss in _stats().values() for s in ss}

    results: dict[str, dg.ExecuteInProcessResult] = {}

    def run(key: str) -> None:
        results[key] = dg.materialize(VARIANT_ASSETS, partition_key=key, instance=dagster_instance,
                                      resources=default_resources(), raise_on_error=False)

    threads = [threading.Thread(target=run, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert all(r.success for r in results.values())
    status = db.get_job_status(db.get_engine(pipeline_env.app_url), job.job_id)
    assert {(v.step, v.status) for v in status.variants} == {(stage_graph.LAST_VARIANT_STAGE, "done")}

    stats = _stats()
    assert set(stats) == {"vlm", "detector", "image_generator", "text_model"}
    for family, replicas in stats.items():
        for replica in replicas:  # each replica loaded its model once (the image generator: inpainting only)
            assert replica["loads"] == 1, (family, replica["load_counts"])
    # Calls of different variants went into one model call: the replica's histogram says so.
    vlm = stats["vlm"][0]
    new_sizes = Counter(vlm["batch_sizes"]) - before.get(vlm["replica"], Counter())
    assert any(int(size) > 1 for size in new_sizes), vlm["batch_sizes"]

    # Each materialization names the backend, the replica, its call's batch size, queueing, loads.
    batch_sizes = []
    for key, result in results.items():
        md = result.asset_materializations_for_node("vlm_analyze")[0].metadata
        assert md["model_backend"].value == "ray"
        assert md["model_replica"].value == vlm["replica"]
        assert md["model_replica_loads"].value == 1
        assert md["model_queued_s"].value >= 0
        batch_sizes.append(md["model_batch_size"].value)
        assert md["model_loads_in_run"].value == {}, key  # nothing loaded in the run itself
        assert result.asset_materializations_for_node("planner")[0].metadata["model_backend"].value == "ray"
    assert max(batch_sizes) > 1


def test_a_run_worker_with_the_ray_backend_imports_no_model_library(pipeline_env, use_ray_backend) -> None:
    job = submit_sample(pipeline_env.app_url, variants=1)
    script = textwrap.dedent(f"""
        import json, sys
        import dagster as dg
        from variant_pipeline.assets.partitions import variant_partitions
        from variant_pipeline.assets.stage_assets import VARIANT_ASSETS
        from variant_pipeline.resources import default_resources
from variant_pipeline.services import wait_for_job

        key = {str(job.variant_ids[0])!r}
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(variant_partitions.name, [key])
            result = dg.materialize(VARIANT_ASSETS, partition_key=key, instance=instance,
                                    resources=default_resources(), raise_on_error=False)
        print(json.dumps({{"success": result.success,
                          "loaded": [m for m in {MODEL_LIBRARIES!r} if m in sys.modules]}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"success": True, "loaded": []}, proc.stderr[-3000:]
    status = db.get_job_status(db.get_engine(pipeline_env.app_url), job.job_id)
    assert (status.variants[0].step, status.variants[0].status) == (stage_graph.LAST_VARIANT_STAGE, "done")


def test_a_cluster_that_is_down_is_one_clear_error_naming_its_address(monkeypatch) -> None:
    from variant_pipeline.models.ray_head import ModelServerUnavailable
    from variant_pipeline.models.serve_client import served

    monkeypatch.setenv("VP_MODEL_BACKEND", "ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6399")  # nothing listens there
    vlm = served("vlm", load_settings())
    with pytest.raises(ModelServerUnavailable, match=r"^Ray cluster at 127\.0\.0\.1:6399 is not reachable"):
        vlm.generate([Image.new("RGB", (32, 32))], ["describe"])


def test_serve_settings_are_checked(monkeypatch) -> None:
    monkeypatch.setenv("VP_SERVE_BATCH", "vlm=4:0.1,ocr=2")
    with pytest.raises(SettingsError, match="unknown model family 'ocr'"):
        load_settings()
    monkeypatch.setenv("VP_SERVE_BATCH", "vlm=4:0.1")
    monkeypatch.setenv("VP_MODEL_BACKEND", "gpu")
    with pytest.raises(SettingsError, match="VP_MODEL_BACKEND must be one of local, ray"):
        load_settings()
    monkeypatch.setenv("VP_MODEL_BACKEND", "ray")
    settings = load_settings()
    assert settings.serve_batch["vlm"] == (4, 0.1)
    assert settings.serve_batch["detector"] == (16, 0.02)  # the default


def _vlm_replica_with_a_call_in_flight(timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for replica in _stats().get("vlm", []):
            if replica["in_flight"] > 0:
                return replica
        time.sleep(0.02)
    raise AssertionError("no vlm call was seen in flight")


@pytest.mark.e2e
def test_two_jobs_through_the_daemon_survive_a_replica_killed_mid_call(pipeline_env, use_ray_backend,
                                                                      monkeypatch) -> None:
    from tests.test_faults_e2e import _assert_settled, pipeline

    engine = db.get_engine(pipeline_env.app_url)
    killed: dict = {}
    with pipeline(monkeypatch) as (env, services):
        jobs = [submit_sample(env.app_url, variants=3) for _ in range(2)]
        # SIGKILL the VLM replica while a call waits in it; Serve starts another one.
        killed = _vlm_replica_with_a_call_in_flight(timeout_s=300)
        os.kill(killed["pid"], signal.SIGKILL)
        statuses = [wait_for_job(env.app_url, j.job_id, timeout_s=600, log=lambda _m: None) for j in jobs]
        log_text = services.logs["daemon"].read_text(errors="replace")[-3000:]
        for status in statuses:
            assert (status.step, status.status) == (stage_graph.LAST_JOB_STAGE, "done"), log_text
        _assert_settled(engine, [str(j.job_id) for j in jobs], log_text)

    lost = []
    for job in jobs:
        for variant in job.variant_ids:
            attempts = claims.attempts_of(engine, str(variant))
            done = Counter(a["stage"] for a in attempts if a["outcome"] == "done")
            assert done == Counter(s.name for s in stage_graph.VARIANT_STAGES), (variant, done)
            lost += [a for a in attempts if a["outcome"] == "failed" and a["will_retry"]]
    # The call that was in the killed replica: its attempt failed as transient and was retried.
    assert lost and all(a["stage"] in ("vlm_analyze", "vlm_judge") for a in lost), lost
    assert any("vlm.generate on the Ray cluster at" in a["error"] for a in lost), lost

    stats = _stats()
    assert killed["replica"] not in {s["replica"] for s in stats["vlm"]}  # replaced by Serve
    for family, replicas in stats.items():
        for replica in replicas:  # every live replica, the restarted one too, loaded its model once
            assert replica["loads"] == 1, (family, replica["load_counts"])
    with dg.DagsterInstance.get() as instance:
        for run in instance.get_runs():
            assert "gpu" not in str(run.tags.get("dagster/pool", "")), run.tags  # no stage held the gpu pool
