"""What the failure webhook is told: one message per post, a burst of failures as one summary.

Pure: the sensor (sensors/notices.py) reads the due notices, posts what this builds and records
the outcome. The JSON carries ``text`` (what Slack, Mattermost and similar incoming webhooks show)
and ``failures`` with every field a program needs; each notice's ``notice_id`` lets a receiver
drop a repeat (a sender that died after posting, before recording it, posts it again).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from variant_pipeline.data.notices import Notice

# Notices named one by one in a summary's text (all of them are in ``failures``).
SUMMARY_LINES = 5
MAX_RETRY_WAIT_S = 600.0


def run_url(ui_url: str, run_id: str | None) -> str:
    base = ui_url.rstrip("/")
    return f"{base}/runs/{run_id}" if run_id else f"{base}/runs"


def _one_line(notice: Notice, ui_url: str) -> str:
    what = (f"variant {notice.variant_id} of job {notice.job_id}" if notice.level == "variant"
            else f"job {notice.job_id}")
    attempts = f" after {notice.attempts} attempt{'s' if notice.attempts != 1 else ''}" if notice.attempts else ""
    return (f"{what} failed at {notice.stage}{attempts}: {notice.reason or 'no reason recorded'} "
            f"({run_url(ui_url, notice.run_id)})")


def build_message(notices: Sequence[Notice], ui_url: str) -> dict[str, Any]:
    if not notices:
        raise ValueError("no notices to send")
    failures = [{
        "notice_id": n.notice_id, "level": n.level, "job_id": n.job_id, "variant_id": n.variant_id,
        "stage": n.stage, "reason": n.reason, "attempts": n.attempts, "run_id": n.run_id,
        "run_url": run_url(ui_url, n.run_id), "failed_at": n.failed_at.isoformat(),
    } for n in notices]
    if len(notices) == 1:
        text = f"variant_pipeline: {_one_line(notices[0], ui_url)}"
    else:
        levels = Counter(n.level for n in notices)
        parts = [f"{levels[level]} {level}{'s' if levels[level] != 1 else ''}" for level in ("variant", "job")
                 if levels[level]]
        lines = [_one_line(n, ui_url) for n in notices[:SUMMARY_LINES]]
        if len(notices) > SUMMARY_LINES:
            lines.append(f"... and {len(notices) - SUMMARY_LINES} more")
        text = f"variant_pipeline: {len(notices)} failures ({', '.join(parts)}):\n" + "\n".join(
            f"- {line}" for line in lines)
    return {"source": "variant_pipeline", "count": len(notices), "text": text, "failures": failures}


def retry_wait_s(tries: int, first_wait_s: float) -> float:
    """Doubling after each failed post, at most ten minutes."""
    return min(MAX_RETRY_WAIT_S, first_wait_s * 2 ** max(0, tries))
