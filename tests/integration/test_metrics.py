"""The Prometheus collector against a real PostgreSQL and a real Dagster instance: what a scrape
reports, each attempt ending counted once and never skipped (a transaction still open at a scrape
is counted at the next one), and a scrape that does not wait on the pipeline's locks."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.db import create_job
from variant_pipeline import handlers
from variant_pipeline.config import load_settings
from variant_pipeline.data.storage import AssetStore
from variant_pipeline.handlers import HandlerContext, StageOutcome, execute_stage
from variant_pipeline.ops.metrics import PipelineCollector, exposition
from variant_pipeline.state import claims
from variant_pipeline.state.attempts import StageFailed

STAGE = "img_gen"


def _scrape(collector: PipelineCollector) -> dict[tuple[str, frozenset], float]:
    samples = {}
    for family in text_string_to_metric_families(exposition(collector)):
        for s in family.samples:
            samples[s.name, frozenset(s.labels.items())] = s.value
    return samples


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def _ctx(engine, key: str, tmp_path: Path, **settings) -> HandlerContext:
    return HandlerContext(engine=engine, store=AssetStore(tmp_path / "assets"),
                          settings=load_settings().model_copy(update=settings), models=None,  # type: ignore[arg-type]
                          origin="dagster-run:metrics-test", partition_key=key, log=lambda _m: None,
                          run_id="metrics-test")


def _done(ctx: HandlerContext) -> StageOutcome:
    return StageOutcome(write=lambda _conn: None, metadata={})


@pytest.fixture
def collector(engine, dagster_instance, pipeline_env) -> PipelineCollector:
    settings = load_settings().model_copy(update={"stall_after_s": 0.5})
    return PipelineCollector(engine, dagster_instance, settings)


def test_a_scrape_counts_each_attempt_ending_once(engine, collector, tmp_path, monkeypatch) -> None:
    job = create_job(engine, variants=3)
    first, second, third = (str(k) for k in job.variant_ids)
    before = _scrape(collector)
    assert _value(before, "variant_pipeline_variants", stage=STAGE, status="queued") == 3
    assert _value(before, "variant_pipeline_unfinished", level="variant") == 3
    assert _value(before, "variant_pipeline_stage_attempts_total", stage=STAGE, outcome="done") == 0

    monkeypatch.setitem(handlers.HANDLERS, STAGE, _done)
    execute_stage(STAGE, _ctx(engine, first, tmp_path))
    failing = _ctx(engine, second, tmp_path, faults=f"{STAGE}:raise", max_attempts=2, retry_backoff_s=0.01)
    for continues in (False, True):
        with pytest.raises(StageFailed):
            execute_stage(STAGE, dataclasses.replace(failing, continues_attempts=continues))

    after = _scrape(collector)
    assert _value(after, "variant_pipeline_stage_attempts_total", stage=STAGE, outcome="done") == 1
    assert _value(after, "variant_pipeline_stage_attempts_total", stage=STAGE, outcome="failed") == 2
    assert _value(after, "variant_pipeline_stage_retries_scheduled_total", stage=STAGE) == 1
    assert _value(after, "variant_pipeline_stage_attempt_duration_seconds_count", stage=STAGE) == 3
    assert _value(after, "variant_pipeline_stage_attempt_duration_seconds_bucket", stage=STAGE, le="+Inf") == 3
    assert _value(after, "variant_pipeline_failures_total", level="variant", stage=STAGE) == 1
    assert _value(after, "variant_pipeline_variants", stage=STAGE, status="done") == 1
    assert _value(after, "variant_pipeline_variants", stage=STAGE, status="failed") == 1

    # An ending whose transaction is still open at a scrape: not counted yet, and not skipped later,
    # although an ending committed after it (a higher transaction id) is already visible. (The open
    # one is on another variant: its foreign-key lock would hold up the claim of its own row.)
    with engine.connect() as late:
        late.begin()
        claims.record_skipped(late, stage=STAGE, partition_key=first, run_id="stale", origin="dagster-run:stale",
                              reason="test")
        execute_stage(STAGE, _ctx(engine, third, tmp_path))  # commits while `late` is open
        during = _scrape(collector)
        late.commit()
    assert _value(during, "variant_pipeline_stage_attempts_total", stage=STAGE, outcome="skipped") == 0
    assert _value(during, "variant_pipeline_stage_attempts_total", stage=STAGE, outcome="done") == 1
    final = _scrape(collector)
    assert _value(final, "variant_pipeline_stage_attempts_total", stage=STAGE, outcome="skipped") == 1
    assert _value(final, "variant_pipeline_stage_attempts_total", stage=STAGE, outcome="done") == 2
    again = _scrape(collector)
    assert _value(again, "variant_pipeline_stage_attempts_total", stage=STAGE, outcome="done") == 2


def test_stuck_rows_leave_out_those_with_a_run_in_progress(engine, collector, dagster_instance) -> None:
    job = create_job(engine, variants=2)
    busy_key = str(job.variant_ids[0])
    dagster_instance.add_run(dg.DagsterRun(job_name="variant_pipeline", run_id=str(uuid.uuid4()),
                                           status=dg.DagsterRunStatus.STARTED,
                                           tags={"dagster/partition": busy_key}))
    time.sleep(1.0)  # past the collector's 0.5 s stall rule
    samples = _scrape(collector)
    assert _value(samples, "variant_pipeline_stuck", level="variant") == 1  # the other variant
    assert _value(samples, "variant_pipeline_stuck", level="job") == 1
    assert _value(samples, "variant_pipeline_dagster_runs", state="in_progress") == 1
    with engine.connect() as conn:
        events = conn.execute(sa.text("SELECT count(*) FROM pipeline_events")).scalar_one()
    # No outbox sensor has run on this instance: every event is unread.
    assert _value(samples, "variant_pipeline_outbox_backlog_events") == events > 0
    assert _value(samples, "variant_pipeline_outbox_oldest_unread_age_seconds") >= 1.0
    assert _value(samples, "variant_pipeline_scrape_errors_total", part="database") == 0


def test_a_scrape_does_not_wait_on_the_pipelines_locks(engine, collector) -> None:
    job = create_job(engine, variants=1)
    key = str(job.variant_ids[0])
    with engine.connect() as holder:
        holder.begin()  # what a claim holds: the row, and the partition's advisory lock
        holder.execute(sa.text("SELECT 1 FROM jobs_variants WHERE job_variants_id = :k FOR UPDATE"), {"k": key})
        holder.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": key})
        holder.execute(sa.text("UPDATE jobs SET updated_at = updated_at WHERE job_id = :j"), {"j": str(job.job_id)})
        result: list[dict] = []
        scraper = threading.Thread(target=lambda: result.append(_scrape(collector)))
        scraper.start()
        scraper.join(30)
        holder.rollback()
    assert result and _value(result[0], "variant_pipeline_variants", stage=STAGE, status="queued") == 1
    assert _value(result[0], "variant_pipeline_scrape_errors_total", part="database") == 0


def test_a_database_that_is_down_is_one_error_and_the_rest_still_reported(dagster_instance, pipeline_env) -> None:
    dead = sa.create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    collector = PipelineCollector(dead, dagster_instance, load_settings())
    samples = _scrape(collector)
    assert _value(samples, "variant_pipeline_scrape_errors_total", part="database") == 1
    assert _value(samples, "variant_pipeline_dagster_runs", state="queued") == 0
    assert not any(name == "variant_pipeline_variants" for name, _ in samples)


def test_the_shipped_rules_and_dashboard_name_only_metrics_the_exporter_has(engine, collector) -> None:
    import json
    import re

    import yaml

    import variant_pipeline.ops.metrics as metrics_module

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    rules = yaml.safe_load((deploy / "prometheus" / "variant_pipeline_rules.yml").read_text())
    dashboard = json.loads((deploy / "grafana" / "variant_pipeline_dashboard.json").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    referenced = {name for expr in exprs for name in re.findall(r"\bvariant_pipeline_\w+", expr)}
    create_job(engine, variants=1)
    exposed = {name for name, _labels in _scrape(collector)}
    source = Path(metrics_module.__file__).read_text()
    # The replica metrics exist only with the ray backend: they must at least be declared.
    missing = {n for n in referenced - exposed
               if not (n.startswith("variant_pipeline_replica_")
                       and re.sub(r"_(total|bucket|sum|count)$", "", n).removeprefix("variant_pipeline_") in source)}
    assert referenced and not missing, missing


def test_promtool_accepts_a_real_scrape(engine, collector, tmp_path) -> None:
    import shutil
    import subprocess

    create_job(engine, variants=2)
    _scrape(collector)  # the second scrape also carries the counters' first increments
    text = exposition(collector)
    assert "variant_pipeline_stage_attempts_total" in text
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/setup.sh"
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        result.stdout + result.stderr
