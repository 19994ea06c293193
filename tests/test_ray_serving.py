"""The ``ray`` model backend on a real local Ray head (loopback) serving the tiny bundle.

Batching, loads and replicas are read from the deployments' own counters, never from timings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import dagster as dg
import pytest
from PIL import Image

from tests.fixtures.pipeline import submit_sample
from variant_pipeline import claims
from variant_pipeline import stages as stage_graph
from variant_pipeline.config import PROJECT_ROOT, SettingsError, load_settings
from variant_pipeline.data.engine import get_engine
from variant_pipeline.data.jobs import get_job_status
from variant_pipeline.services import wait_for_job

MODEL_LIBRARIES = ("torch", "transformers", "diffusers", "ultralytics")


def _stats() -> dict[str, list[dict]]:
    from variant_pipeline.models.serving import replica_stats

    by_family: dict[str, list[dict]] = {}
    for s in replica_stats():
        by_family.setdefault(s["family"], []).append(s)
    return by_family


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
    before = {s["replica"]: Counter(s["batch_sizes"]) for ss in _stats().values() for s in ss}
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
    assert {(v.step, v.status) for v in status.variants} == {(stage_graph.LAST_VARIANT_STAGE, "done")}

    stats = _stats()
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


def test_a_cluster_that_is_down_is_one_clear_error_naming_its_address(monkeypatch) -> None:
    from variant_pipeline.models.ray_head import ModelServerUnavailable
    from variant_pipeline.models.serve_client import served

    monkeypatch.setenv("VP_MODEL_BACKEND", "ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6399")  # nothing listens there
    vlm = served("vlm", load_settings())
    with pytest.raises(ModelServerUnavailable, match=r"^Ray cluster at 127\.0\.0\.1:6399 is not reachable"):
        vlm.generate([Image.new("RGB", (32, 32))], ["describe"])


def test_a_call_past_the_stage_deadline_is_cancelled_with_a_clear_error(use_ray_backend) -> None:
    from variant_pipeline.models.serve_client import ModelCallTimeout, served

    vlm = served("vlm", load_settings(), deadline=time.monotonic())  # the stage's time is up
    with pytest.raises(ModelCallTimeout, match=r"vlm\.generate passed the stage's time limit; cancelled in Serve"):
        vlm.generate([Image.new("RGB", (32, 32))], ["describe"], max_new_tokens=4)
    assert vlm.calls == []


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

    engine = get_engine(pipeline_env.app_url)
    killed: dict = {}
    with pipeline(monkeypatch) as (env, services):
        jobs = [submit_sample(env.app_url, variants=3) for _ in range(2)]
        # SIGKILL the VLM replica while a call waits in it; Serve starts another one.
        killed = _vlm_replica_with_a_call_in_flight(timeout_s=900)
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


@pytest.mark.e2e
def test_ray_stopped_while_a_job_waits_then_its_retry_finishes_after_ray_is_back(
        pipeline_env, use_ray_backend, monkeypatch) -> None:
    import ray

    from tests.fixtures.ray import TEST_RAY_PORT
    from tests.test_faults_e2e import _wait_for, pipeline
    from variant_pipeline.models import ray_head
    from variant_pipeline.models.serving import deploy

    def head_settings():  # the session head's own home and models, not this test's
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("VARIANT_PIPELINE_HOME", str(use_ray_backend.home))
            mp.setenv("VP_MODELS_DIR", str(use_ray_backend.models_dir))
            mp.setenv("VP_SERVE_BATCH", "vlm=8:0.3,detector=8:0.3")
            mp.delenv("RAY_ADDRESS", raising=False)
            return load_settings()

    ray.shutdown()
    ray_head.stop_head(head_settings())
    engine = get_engine(pipeline_env.app_url)
    # Retries far enough apart that the head is back before the attempts run out.
    with pipeline(monkeypatch, VP_RETRY_BACKOFF_S="15", VP_MAX_ATTEMPTS="5") as (env, services):
        job = submit_sample(env.app_url, variants=1)
        variant = str(job.variant_ids[0])

        def first_failure() -> dict | None:
            return next((a for a in claims.attempts_of(engine, variant) if a["outcome"] == "failed"), None)

        _wait_for(lambda: first_failure() is not None, 120, "the attempt that found Ray down")
        failed = first_failure()
        settings = head_settings()
        ray_head.start_head(settings, TEST_RAY_PORT, num_cpus=2)
        ray_head.connect(settings)
        deploy(settings)
        status = wait_for_job(env.app_url, job.job_id, timeout_s=600, log=lambda _m: None)
        log_text = services.logs["daemon"].read_text(errors="replace")[-3000:]

    assert failed["stage"] == "img_gen" and failed["will_retry"], failed
    assert f"Ray cluster at 127.0.0.1:{TEST_RAY_PORT} is not reachable" in failed["error"], failed
    assert (status.step, status.status) == (stage_graph.LAST_JOB_STAGE, "done"), log_text
    img_gen = [(a["attempt"], a["outcome"]) for a in claims.attempts_of(engine, variant) if a["stage"] == "img_gen"]
    assert img_gen[0] == (1, "failed") and img_gen[-1][1] == "done", img_gen
    assert sum(1 for _n, outcome in img_gen if outcome == "done") == 1
