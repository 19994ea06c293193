"""What an operator watches, end to end: the daemon runs a job with one variant made to fail and
another job left stuck; `variant-pipeline metrics` is scraped by a real Prometheus (Debian's
server, installed by scripts/setup.sh) that evaluates the shipped alert rules; the failure webhook
receives exactly one notice for the one failure; `doctor` passes on the running deployment.

The rules are the shipped ones with their `for:` periods cut to seconds (minutes in production,
tested at full length by tests/unit/test_prometheus_rules.py) and a 1 s scrape.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e.test_faults import _wait_for, pipeline
from tests.fixtures.pipeline import submit_sample
from tests.fixtures.webhook import Receiver
from variant_pipeline import stages as stage_graph
from variant_pipeline.data.engine import get_engine, transaction
from variant_pipeline.services import wait_for_job

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prometheus_config(folder: Path, exporter_port: int) -> Path:
    rules = re.sub(r"for: \d+m", "for: 3s", (DEPLOY / "variant_pipeline_rules.yml").read_text())
    (folder / "variant_pipeline_rules.yml").write_text(rules)
    config = folder / "prometheus.yml"
    config.write_text(f"""global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [variant_pipeline_rules.yml]
scrape_configs:
  - job_name: variant_pipeline
    static_configs: [{{targets: ["127.0.0.1:{exporter_port}"]}}]
""")
    return config


def _firing(prometheus: str) -> dict[str, list[dict]]:
    response = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5)
    response.raise_for_status()
    alerts = response.json()["data"]["alerts"]
    firing: dict[str, list[dict]] = {}
    for alert in alerts:
        if alert["state"] == "firing":
            firing.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
    return firing


def _ghost_job(engine, tenant_id: str) -> str:
    """A job whose rows say a run carries them on, with no run at all: stuck until the stall rule."""
    with transaction(engine, origin="dagster-run:ghost") as conn:
        job_id = conn.execute(sa.text("INSERT INTO jobs (tenant_id, expected_variants) VALUES (:t, 1) "
                                      "RETURNING job_id::text"), {"t": tenant_id}).scalar_one()
        conn.execute(sa.text("INSERT INTO jobs_variants (job_id, creation_order) VALUES (:j, 1)"), {"j": job_id})
    return job_id


@pytest.mark.e2e
def test_prometheus_fires_the_stuck_and_failure_alerts_and_the_webhook_gets_one_notice(
        pipeline_env, monkeypatch, tmp_path) -> None:
    assert shutil.which("prometheus"), "prometheus is missing: run scripts/setup.sh"
    receiver = Receiver()
    exporter_port, prometheus_port = _free_port(), _free_port()
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    processes: list[subprocess.Popen] = []
    # The daemon's stall rule stays long (the stuck job must stay stuck); the exporter's is short.
    with pipeline(monkeypatch, VP_FAULTS="vlm_analyze:raise:variant=2", VP_STALL_AFTER_S="900",
                  VP_ALERT_WEBHOOK_URL=receiver.url, VP_ALERT_MIN_INTERVAL_S="1") as (env, services):
        try:
            exporter_env = {**env.env, "VP_STALL_AFTER_S": "5"}
            exporter_log = (tmp_path / "exporter.log").open("w")
            processes.append(subprocess.Popen(
                [str(BIN / "variant-pipeline"), "metrics", "--port", str(exporter_port)], env=exporter_env,
                stdout=exporter_log, stderr=subprocess.STDOUT))
            processes.append(subprocess.Popen(
                ["prometheus", f"--config.file={_prometheus_config(tmp_path, exporter_port)}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                stdout=(tmp_path / "prometheus.log").open("w"), stderr=subprocess.STDOUT))

            def scraped() -> bool:
                try:  # until it is ready Prometheus refuses, or answers 503 in plain text
                    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": "up"}, timeout=5)
                except httpx.HTTPError:
                    return False
                if response.status_code != 200:
                    return False
                return any(r["value"][1] == "1" for r in response.json()["data"]["result"])

            _wait_for(scraped, 120, "Prometheus scraping the exporter")

            engine = get_engine(env.app_url)
            job = submit_sample(env.app_url, variants=3)
            _ghost_job(engine, _tenant_of(engine, str(job.job_id)))
            status = wait_for_job(env.app_url, job.job_id, timeout_s=900, log=lambda _m: None)
            assert (status.stage, status.status) == (stage_graph.LAST_JOB_STAGE, "done")

            wanted = {"VariantPipelineStuck", "VariantPipelineFailed", "VariantPipelineStageFailing"}
            _wait_for(lambda: wanted <= set(_firing(prometheus_url)), 180,
                      f"{wanted} firing in Prometheus (exporter log: {tmp_path / 'exporter.log'})")
            firing = _firing(prometheus_url)
            assert {a["level"] for a in firing["VariantPipelineStuck"]} == {"variant", "job"}
            assert firing["VariantPipelineFailed"] == [
                {"alertname": "VariantPipelineFailed", "instance": f"127.0.0.1:{exporter_port}",
                 "job": "variant_pipeline", "level": "variant", "severity": "warning", "stage": "vlm_analyze"}]
            assert [a["stage"] for a in firing["VariantPipelineStageFailing"]] == ["vlm_analyze"]
            assert "VariantPipelineOutboxBehind" not in firing and "VariantPipelineScrapeFailing" not in firing

            # Exactly one notice for the one failure, however many ticks pass.
            _wait_for(lambda: receiver.bodies, 60, "the failure notice")
            time.sleep(8)
            failures = [f for body in receiver.bodies for f in body["failures"]]
            failed_variant = str(job.variant_ids[1])
            assert [(f["variant_id"], f["stage"], f["attempts"]) for f in failures] == [
                (failed_variant, "vlm_analyze", 3)]
            assert failures[0]["reason"].startswith("failed after 3 attempts: InjectedFault")

            doctor = subprocess.run([str(BIN / "variant-pipeline"), "doctor", "--json"], env=env.env,
                                    capture_output=True, text=True, timeout=120)
            report = json.loads(doctor.stdout)
            assert doctor.returncode == 0 and report["ok"], doctor.stdout + doctor.stderr
            checks = {c["name"]: c for c in report["checks"]}
            assert checks["dagster daemon"]["ok"] and "tiny random-weight bundle" in checks["model vlm_model"]["detail"]
            _screenshot_if_asked(f"{prometheus_url}/classic/alerts")  # Debian ships the classic UI only
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(30)
            receiver.stop()


def _screenshot_if_asked(url: str) -> None:
    """With VP_OPERATING_SCREENSHOT=FILE, Prometheus' alerts page as the test left it (docs/operating.md)."""
    target = os.environ.get("VP_OPERATING_SCREENSHOT")
    if not target:
        return
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                    "--window-size=1400,1100", "--virtual-time-budget=8000", f"--screenshot={target}", url],
                   capture_output=True, timeout=120, check=True)


def _tenant_of(engine, job_id: str) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT tenant_id FROM jobs WHERE job_id = :j"), {"j": job_id}).scalar_one()
