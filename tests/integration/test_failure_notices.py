"""The failure webhook against a real HTTP server on loopback: one notice per failure, written by
the database with the failure; a burst as one summary; an endpoint that is down gets the notice
later, once; unset, nothing is sent."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from tests.fixtures.db import create_job
from tests.fixtures.webhook import Receiver
from variant_pipeline import handlers
from variant_pipeline.config import load_settings
from variant_pipeline.data.storage import AssetStore
from variant_pipeline.handlers import HandlerContext, StageOutcome, execute_stage
from variant_pipeline.resources.database import DatabaseResource
from variant_pipeline.sensors.notices import build_notice_sensor, deliver_due
from variant_pipeline.state.attempts import StageFailed, StageInputError

STAGE = "img_gen"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def _fail(engine, key: str, tmp_path: Path, monkeypatch, reason: str = "product photo is 1x1 pixels") -> None:
    def bad_input(_ctx: HandlerContext) -> StageOutcome:
        raise StageInputError(reason)

    monkeypatch.setitem(handlers.HANDLERS, STAGE, bad_input)
    ctx = HandlerContext(engine=engine, store=AssetStore(tmp_path / "assets"), settings=load_settings(),
                         models=None,  # type: ignore[arg-type]
                         origin="dagster-run:run-1", partition_key=key, log=lambda _m: None, run_id="run-1")
    with pytest.raises(StageFailed):
        execute_stage(STAGE, ctx)


def _settings(url: str | None, **more):
    return load_settings().model_copy(update={"alert_webhook_url": url, "ui_url": "http://ui.example:3000",
                                              "alert_min_interval_s": 0.2, **more})


def _deliveries(engine) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT delivery, tries FROM failure_notices ORDER BY notice_id")).all()]


def test_each_failure_is_posted_once_and_a_burst_is_one_summary(engine, receiver, tmp_path, monkeypatch) -> None:
    job = create_job(engine, variants=3)
    first, *others = (str(k) for k in job.variant_ids)
    _fail(engine, first, tmp_path, monkeypatch)
    settings = _settings(receiver.url)

    delivery = deliver_due(engine, settings)
    assert delivery is not None and delivery.sent and delivery.notices == 1
    [message] = receiver.bodies
    [failure] = message["failures"]
    assert failure["variant_id"] == first and failure["job_id"] == str(job.job_id)
    assert failure["stage"] == STAGE and failure["attempts"] == 1 and "1x1 pixels" in failure["reason"]
    assert failure["run_url"] == "http://ui.example:3000/runs/run-1"
    assert message["text"].startswith(f"variant_pipeline: variant {first} of job {job.job_id} failed at {STAGE}")
    assert deliver_due(engine, settings) is None  # sent once
    assert len(receiver.bodies) == 1

    for key in others:  # the job fails with its last variant: three failures at once
        _fail(engine, key, tmp_path, monkeypatch)
    deliver_due(engine, settings)
    assert len(receiver.bodies) == 2
    summary = receiver.bodies[1]
    assert summary["count"] == 3 and sorted(f["level"] for f in summary["failures"]) == ["job", "variant", "variant"]
    assert summary["text"].startswith("variant_pipeline: 3 failures (2 variants, 1 job):")
    assert _deliveries(engine) == [("sent", 1)] * 4


def test_an_endpoint_that_is_down_gets_the_notice_once_it_is_back(engine, tmp_path, monkeypatch) -> None:
    down = Receiver()
    port = down.port
    down.stop()  # nothing listens on the port now
    job = create_job(engine, variants=2)
    key = str(job.variant_ids[0])
    _fail(engine, key, tmp_path, monkeypatch)
    settings = _settings(f"http://127.0.0.1:{port}/hook")

    delivery = deliver_due(engine, settings)
    assert delivery is not None and not delivery.sent and "ConnectError" in (delivery.error or "")
    assert _deliveries(engine) == [("pending", 1)]
    assert deliver_due(engine, settings) is None  # waiting before the next try

    back = Receiver(port)
    back.status = 503  # up, but refusing: still not delivered
    try:
        time.sleep(0.3)
        delivery = deliver_due(engine, settings)
        assert delivery is not None and not delivery.sent and delivery.error.startswith("HTTP 503")
        assert _deliveries(engine) == [("pending", 2)]
        back.status = 200
        time.sleep(0.9)  # the wait doubled: 0.4 s
        delivery = deliver_due(engine, settings)
        assert delivery is not None and delivery.sent
        assert [f["variant_id"] for b in back.bodies for f in b["failures"]] == [key]
        assert deliver_due(engine, settings) is None
    finally:
        back.stop()


def test_unset_nothing_is_sent_and_failures_are_settled(engine, db_url, receiver, tmp_path, monkeypatch) -> None:
    job = create_job(engine, variants=1)
    _fail(engine, str(job.variant_ids[0]), tmp_path, monkeypatch)
    monkeypatch.delenv("VP_ALERT_WEBHOOK_URL", raising=False)
    sensor = build_notice_sensor()
    with dg.instance_for_test() as instance, dg.build_sensor_context(
            instance=instance, resources={"database": DatabaseResource(url=db_url)}) as context:
        result = sensor(context)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == "VP_ALERT_WEBHOOK_URL is unset: 2 failure(s) not sent"
    assert _deliveries(engine) == [("unsent", 0), ("unsent", 0)]  # the variant, and its job with it
    assert receiver.bodies == []
    # Set later, it sends only what fails from then on.
    assert deliver_due(engine, _settings(receiver.url)) is None


def test_a_bad_webhook_url_is_refused_in_one_line(monkeypatch) -> None:
    from variant_pipeline.config import SettingsError

    monkeypatch.setenv("VP_ALERT_WEBHOOK_URL", "hooks.example.com/x")
    with pytest.raises(SettingsError, match="VP_ALERT_WEBHOOK_URL must be an http:// or https:// URL"):
        load_settings()
