"""A stage materialized by hand continues downstream, whichever way a person starts it.

With the real daemon and PostgreSQL: a one-variant job runs to its feed; then its overlay is
re-rendered by hand, once from the command line (``dagster asset materialize ... -m
variant_pipeline.definitions``, a run with no code-location origin) and once through the web
server's GraphQL API as the UI's Materialize button sends it. Each time the continuation sensor
launches the rest of the variant's stages from that run. The stall recovery (``VP_STALL_AFTER_S``,
300 s by default) is far beyond the wait here, so only the continuation can be what ran them.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import dagster as dg
import pytest

from tests.fixtures.pipeline import submit_sample
from variant_pipeline import stages as stage_graph
from variant_pipeline.assets.jobs import LAUNCHED_BY_TAG, SOURCE_RUN_TAG, START_STAGE_TAG
from variant_pipeline.config import PROJECT_ROOT
from variant_pipeline.data.engine import get_engine
from variant_pipeline.data.jobs import get_job_status
from variant_pipeline.sensors.continuation import CONTINUATION
from variant_pipeline.services import Environment, Services, prepare_environment, start_services, wait_for_job

LAUNCH = """mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""


def materialize_through_web_server(port: int, asset: str, partition: str) -> str:
    """Launch ``asset`` for ``partition`` as the UI's Materialize button does; the run's id."""
    params = {
        "mode": "default",
        "runConfigData": "{}",
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
        "selector": {"repositoryLocationName": "variant_pipeline", "repositoryName": "__repository__",
                     "pipelineName": "__ASSET_JOB", "assetSelection": [{"path": [asset]}],
                     "assetCheckSelection": []},
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"query": LAUNCH, "variables": {"executionParams": params}}).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())["data"]["launchPipelineExecution"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]


@pytest.fixture
def finished_variant(pipeline_env, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Environment, Services, str, int]]:
    """Daemon and web server up, and a one-variant job run to its feed: (env, services, variant, port)."""
    for name in ("DAGSTER_HOME", "VP_DAGSTER_STORAGE_URL", "DATABASE_URL"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # prepare_environment sets them; restored after
    env = prepare_environment(log=lambda _msg: None)
    port = random.randint(3100, 3199)
    services = start_services(env, webserver_port=port, log=lambda _msg: None)
    try:
        job = submit_sample(env.app_url, variants=1)
        status = wait_for_job(env.app_url, job.job_id, timeout_s=900, log=lambda _msg: None)
        assert (status.stage, status.status) == (stage_graph.LAST_JOB_STAGE, "done"), status
        yield env, services, str(job.variant_ids[0]), port
    finally:
        services.stop()


def _continuation_of(run_id: str, timeout_s: float) -> dg.DagsterRun:
    """The continuation run launched from ``run_id``, once it has finished."""
    deadline = time.monotonic() + timeout_s
    with dg.DagsterInstance.get() as instance:
        while time.monotonic() < deadline:
            runs = instance.get_runs(dg.RunsFilter(tags={SOURCE_RUN_TAG: run_id}))
            if runs and runs[0].status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
                return runs[0]
            time.sleep(0.5)
    raise TimeoutError(f"no continuation of run {run_id} finished within {timeout_s:.0f} s")


def _assert_continued(env: Environment, services: Services, hand_run_id: str, variant: str) -> None:
    log = services.logs["daemon"].read_text(errors="replace")[-3000:]
    continuation = _continuation_of(hand_run_id, timeout_s=150)
    assert continuation.status == dg.DagsterRunStatus.SUCCESS, log
    assert continuation.tags[LAUNCHED_BY_TAG] == CONTINUATION
    assert continuation.tags[START_STAGE_TAG] == "vlm_judge"
    assert continuation.tags["dagster/partition"] == variant
    with dg.DagsterInstance.get() as instance:
        hand = instance.get_run_by_id(hand_run_id)
        assert hand is not None and hand.status == dg.DagsterRunStatus.SUCCESS
        ended = instance.get_run_record_by_id(hand_run_id).end_time
        created = instance.get_run_record_by_id(continuation.run_id).create_timestamp.timestamp()
        print(f"continuation of {hand.tags.get('dagster/partition')} created {created - ended:.1f} s after the hand run ended")
        for stage in stage_graph.stages_from("vlm_judge"):
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage.name), asset_partitions=[variant]), limit=1).records
            assert records and records[0].run_id == continuation.run_id, stage.name
    status = get_job_status(get_engine(env.app_url), _job_of(env, variant))
    assert [(v.stage, v.status) for v in status.variants] == [(stage_graph.LAST_VARIANT_STAGE, "done")]


def _job_of(env: Environment, variant: str) -> str:
    with get_engine(env.app_url).connect() as conn:
        return conn.exec_driver_sql(f"SELECT job_id::text FROM jobs_variants WHERE job_variants_id = '{variant}'").scalar_one()


# A whole job, a hand run and its continuation: past the default 600 s on a loaded 2-core machine.
@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_overlay_materialized_from_the_command_line_continues_downstream(finished_variant) -> None:
    env, services, variant, _port = finished_variant
    proc = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "dagster"), "asset", "materialize", "--select", "overlay",
         "--partition", variant, "-m", "variant_pipeline.definitions"],
        cwd=PROJECT_ROOT, env=env.env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with dg.DagsterInstance.get() as instance:
        [hand] = [r for r in instance.get_runs(dg.RunsFilter(tags={"dagster/partition": variant}))
                  if LAUNCHED_BY_TAG not in r.tags]  # not the pipeline's run, nor the continuation
    assert hand.remote_job_origin is None  # what made the sensor skip it: a run from no code location
    _assert_continued(env, services, hand.run_id, variant)


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_overlay_materialized_through_the_web_server_continues_downstream(finished_variant) -> None:
    env, services, variant, port = finished_variant
    _assert_continued(env, services, materialize_through_web_server(port, "overlay", variant), variant)
