"""Three hosts that share only the database and a bucket, with the real daemon and web server.

Each part runs with its own ``VARIANT_PIPELINE_HOME`` (and Dagster home), as on three machines:
the daemon and its run workers on one, the web server (and the runs people launch from the UI) on
another, the command line (submit, results, prune) on a third. The asset root is a bucket of a real
S3 server (SeaweedFS on 127.0.0.1). A job runs end to end, is re-rendered by hand through the web
server, its results are written as an HTML page with the images in it, and prune clears its files
and the orphans from the bucket. No home ever gets an asset directory, so nothing can quietly have
used a local disk. (The tiny model files are one read-only folder all three read, as each machine
would have its own copy.)
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.e2e.test_hand_materialization import _continuation_of, materialize_through_web_server
from variant_pipeline import stages as stage_graph
from variant_pipeline.config import PROJECT_ROOT, load_settings
from variant_pipeline.data.engine import get_engine
from variant_pipeline.data.jobs import get_job_status
from variant_pipeline.data.storage import AssetStore
from variant_pipeline.deployment import DAGSTER_YAML
from variant_pipeline.services import (
    SAMPLE_JOB,
    SAMPLE_PRODUCT,
    Environment,
    prepare_environment,
    start_services,
    wait_for_job,
    wait_for_runs_to_settle,
)

CLI = str(Path(sys.executable).with_name("variant-pipeline"))


def _host(env: Environment, home: Path) -> dict[str, str]:
    """What a second machine sets: its own homes; the same database URLs, bucket and credentials."""
    (home / "dagster").mkdir(parents=True)
    shutil.copyfile(DAGSTER_YAML, home / "dagster" / "dagster.yaml")
    return {**env.env, "VARIANT_PIPELINE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}


def _cli(host: dict[str, str], *args: str) -> str:
    proc = subprocess.run([CLI, *args], env=host, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, (args, proc.stderr[-2000:])
    return proc.stdout


def _finished(run_id: str, timeout_s: float) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout_s
    with dg.DagsterInstance.get() as instance:
        while time.monotonic() < deadline:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.is_finished:
                return run
            time.sleep(0.5)
    raise TimeoutError(f"run {run_id} did not finish within {timeout_s:.0f} s")


@pytest.mark.e2e
@pytest.mark.timeout(1500)
def test_daemon_web_server_and_cli_on_three_homes_share_only_the_database_and_the_bucket(
        pipeline_env, s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DAGSTER_HOME", "VP_DAGSTER_STORAGE_URL", "DATABASE_URL"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # prepare_environment sets them; restored after
    monkeypatch.setenv("VP_ORPHAN_MIN_AGE_S", "0")
    homes = {name: tmp_path / f"host-{name}" for name in ("daemon", "web", "cli")}
    monkeypatch.setenv("VARIANT_PIPELINE_HOME", str(homes["daemon"]))
    env = prepare_environment(log=lambda _msg: None)
    web_host = _host(env, homes["web"])
    cli_host = _host(env, homes["cli"])
    web = Environment(env.settings, env.app_url, env.dagster_url, homes["web"] / "dagster", web_host, env.embedded)
    port = random.randint(3200, 3299)
    daemon = start_services(env, webserver_port=None, log=lambda _msg: None)
    try:
        web_server = start_services(web, webserver_port=port, daemon=False, log=lambda _msg: None)
        try:
            # Submitted from the command-line host: the photo goes to the bucket.
            _cli(cli_host, "tenant", "add", SAMPLE_JOB["tenant_id"])
            submitted = json.loads(_cli(cli_host, "submit", "--tenant", SAMPLE_JOB["tenant_id"], "--description",
                                        SAMPLE_JOB["description_kor"], "--ad-copy-kor", SAMPLE_JOB["ad_copy_kor"],
                                        "--image", str(SAMPLE_PRODUCT), "--variants", "1", "--json"))
            job_id, variant = submitted["job_id"], submitted["variant_ids"][0]
            status = wait_for_job(env.app_url, job_id, timeout_s=900, log=lambda _msg: None)
            assert (status.stage, status.status) == (stage_graph.LAST_JOB_STAGE, "done"), \
                daemon.logs["daemon"].read_text(errors="replace")[-3000:]

            # Re-rendered by hand through the web server: that host's run worker reads the bucket.
            store = AssetStore.from_settings(load_settings())
            before = {f.relative_path for f in store.files()}
            hand = _finished(materialize_through_web_server(port, "overlay", variant), timeout_s=300)
            assert hand.status == dg.DagsterRunStatus.SUCCESS
            assert len({f.relative_path for f in store.files()} - before) == 2  # the new overlay and glyph mask
            continuation = _continuation_of(hand.run_id, timeout_s=300)  # launched by the daemon's sensor
            assert continuation.status == dg.DagsterRunStatus.SUCCESS
            assert wait_for_runs_to_settle(timeout_s=300) == 0
            status = get_job_status(get_engine(env.app_url), job_id)
            assert [(v.stage, v.status) for v in status.variants] == [(stage_graph.LAST_VARIANT_STAGE, "done")]

            # Results on the command-line host: the images come from the bucket into the page.
            page = homes["cli"] / "gallery.html"
            answer = json.loads(_cli(cli_host, "results", job_id, "--json", "--html", str(page)))
            assert answer["variants"][0]["image_path"].startswith(s3_env["VP_ASSET_ROOT"] + "/tenants/")
            assert page.read_text().count('src="data:image/jpeg;base64,') == 1
            # prune until the job is taken: the variant's re-run reopened it, and the sensors may
            # still be rolling it up (its runs in flight make prune skip it until the next pass).
            pruned, jobs, orphans = "", 0, 0
            deadline = time.monotonic() + 300
            while not jobs:
                assert time.monotonic() < deadline, pruned
                time.sleep(1.5)  # the job and the replaced overlay's files become older than the cutoff
                pruned = _cli(cli_host, "prune", "--older-than", "1s")
                total = re.search(r"removed (\d+) jobs' partitions .* (\d+) orphan files", pruned)
                assert total, pruned
                jobs, orphans = jobs + int(total.group(1)), orphans + int(total.group(2))
            assert (jobs, orphans) == (1, 2), pruned  # the job; the replaced overlaid image and glyph mask
        finally:
            web_server.stop()
    finally:
        daemon.stop()
    assert {f.relative_path for f in store.files()} == set(), pruned  # the job's files and the orphans
    assert [name for name, home in homes.items() if (home / "assets").exists()] == []
