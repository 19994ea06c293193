"""The failure notices (sql/007_failure_notices.sql): which are due, and what became of each post."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection


@dataclass(frozen=True)
class Notice:
    notice_id: int
    level: str
    job_id: str
    variant_id: str | None
    stage: str
    reason: str | None
    attempts: int
    run_id: str | None
    failed_at: datetime
    tries: int


def take_due(conn: Connection, limit: int) -> list[Notice]:
    """Due notices, oldest first, locked for this transaction: a second sender (two daemons)
    skips them instead of posting them again."""
    rows = conn.execute(sa.text("""
        SELECT notice_id, level, job_id::text, job_variants_id::text, stage, reason, attempts, run_id,
               failed_at, tries
          FROM failure_notices
         WHERE delivery = 'pending' AND next_try_at <= clock_timestamp()
         ORDER BY notice_id LIMIT :limit
           FOR UPDATE SKIP LOCKED"""), {"limit": limit}).all()
    return [Notice(*row) for row in rows]


def mark_sent(conn: Connection, ids: Sequence[int]) -> None:
    conn.execute(sa.text("""UPDATE failure_notices SET delivery = 'sent', tries = tries + 1,
                                   delivered_at = clock_timestamp(), last_error = NULL
                             WHERE notice_id = ANY(:ids)"""), {"ids": list(ids)})


def mark_try_failed(conn: Connection, ids: Sequence[int], error: str, retry_in_s: float) -> None:
    conn.execute(sa.text("""UPDATE failure_notices SET tries = tries + 1, last_error = :error,
                                   next_try_at = clock_timestamp() + make_interval(secs => :wait)
                             WHERE notice_id = ANY(:ids)"""),
                 {"ids": list(ids), "error": error[:1000], "wait": float(retry_in_s)})


def mark_unsent(conn: Connection) -> int:
    """With no webhook configured: every pending notice is settled as not sent (none is sent later)."""
    return conn.execute(sa.text("""UPDATE failure_notices SET delivery = 'unsent', delivered_at = clock_timestamp()
                                    WHERE delivery = 'pending'""")).rowcount
