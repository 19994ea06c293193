"""The failure webhook: every variant or job that fails for good is posted to
``VP_ALERT_WEBHOOK_URL`` once, with its job, variant, stage, reason, attempts and run.

The notices themselves are written by the database in the transaction that records the failure
(sql/007_failure_notices.sql); this sensor only delivers them. Everything due at a tick goes as
one message (a burst of failures is one summary), and posts are at least
``VP_ALERT_MIN_INTERVAL_S`` apart. A post that fails (endpoint down, not 2xx) is tried again
later, waiting longer each time. The due notices stay row-locked while they are posted, so a
second daemon never posts them too. Unset, nothing is sent: notices are settled as ``unsent``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import httpx

from variant_pipeline.config import Settings, load_settings
from variant_pipeline.data.engine import Engine
from variant_pipeline.data.notices import mark_sent, mark_try_failed, mark_unsent, take_due
from variant_pipeline.resources.database import DatabaseResource
from variant_pipeline.state.notices import build_message, retry_wait_s

NOTICE_SENSOR_NAME = "failure_notice_sensor"
MAX_PER_MESSAGE = 200  # a larger backlog goes in several messages, one per interval
POST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Delivery:
    notices: int
    sent: bool
    error: str | None = None


def deliver_due(engine: Engine, settings: Settings,
                post: Callable[..., httpx.Response] = httpx.post) -> Delivery | None:
    """Post every due notice as one message and record the outcome; None when nothing is due."""
    assert settings.alert_webhook_url
    with engine.begin() as conn:
        due = take_due(conn, MAX_PER_MESSAGE)
        if not due:
            return None
        ids = [n.notice_id for n in due]
        error = None
        try:
            response = post(settings.alert_webhook_url, json=build_message(due, settings.ui_url),
                            timeout=POST_TIMEOUT_S)
            if not 200 <= response.status_code < 300:
                error = f"HTTP {response.status_code}: {' '.join(response.text.split())[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            mark_sent(conn, ids)
        else:
            tries = min(n.tries for n in due)
            mark_try_failed(conn, ids, error, retry_wait_s(tries, settings.alert_min_interval_s))
    return Delivery(len(ids), error is None, error)


def build_notice_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name=NOTICE_SENSOR_NAME,
        minimum_interval_seconds=5,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts each variant or job that failed for good to VP_ALERT_WEBHOOK_URL (once; a burst "
        "as one summary); does nothing when it is unset.",
    )
    def failure_notice_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource):
        settings = load_settings()
        engine = database.engine()
        if not settings.alert_webhook_url:
            with engine.begin() as conn:
                settled = mark_unsent(conn)
            return dg.SkipReason(f"VP_ALERT_WEBHOOK_URL is unset: {settled} failure(s) not sent")
        last_post = float(context.cursor or 0)
        if time.time() - last_post < settings.alert_min_interval_s:
            return dg.SkipReason("the last post was under VP_ALERT_MIN_INTERVAL_S ago")
        delivery = deliver_due(engine, settings)
        if delivery is None:
            return dg.SkipReason("no failure to send")
        context.update_cursor(str(time.time()))
        if delivery.sent:
            return dg.SkipReason(f"sent {delivery.notices} failure notice(s)")
        context.log.warning(f"failure webhook: {delivery.error}; {delivery.notices} notice(s) kept for a retry")
        return dg.SkipReason(f"post failed ({delivery.error}); will retry")

    return failure_notice_sensor
