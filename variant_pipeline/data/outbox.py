"""Reading the ``pipeline_events`` outbox without ever skipping or repeating an event.

Event ids come from a sequence, and sequence values are handed out at insert time, not at
commit time: transaction A can take id 10, transaction B id 11, and B can commit first. A reader
that remembers "the last id I saw" reads 11, saves 11, and never returns 10.

Here each event also records its writing transaction's id (``xid``, a 64-bit xid8). A read
returns only events whose transaction is older than the oldest transaction still running
(``xid < pg_snapshot_xmin(pg_current_snapshot())``): every such transaction has finished, so
all its rows are visible now and no more rows with such an xid can ever appear. Events are
returned in ``(xid, id)`` order and the cursor is the last ``(xid, id)`` returned, so anything
a later read can return sorts after the cursor.

The price: one long-running transaction (anywhere on the server, any database) holds back
events of transactions that started after it, until it ends. Keep transactions short.
"""

from __future__ import annotations

import json
import select
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from variant_pipeline.stages import Level

VARIANT_CHANNEL = "job_variant_state_changed"
JOB_CHANNEL = "job_state_changed"
CHANNELS: tuple[str, ...] = (VARIANT_CHANNEL, JOB_CHANNEL)


@dataclass(frozen=True)
class Event:
    id: int
    xid: int
    created_at: datetime
    level: Level  # the row's: the table's column is named kind
    job_variants_id: uuid.UUID | None
    job_id: uuid.UUID
    tenant_id: str
    old_stage: str | None  # the column old_step: the row's current_step before
    old_status: str | None
    new_stage: str  # new_step: its current_step after
    new_status: str
    error: str | None
    origin: str


def encode_cursor(xid: int, event_id: int) -> str:
    return json.dumps({"xid": str(xid), "id": event_id}, separators=(",", ":"))


def decode_cursor(cursor: str | None) -> tuple[int, int]:
    """(xid, id) of a cursor string; (0, 0) for None/'' (the beginning)."""
    if not cursor:
        return (0, 0)
    try:
        data = json.loads(cursor)
        xid, event_id = int(data["xid"]), int(data["id"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"malformed outbox cursor {cursor!r}") from exc
    if xid < 0 or event_id < 0:
        raise ValueError(f"malformed outbox cursor {cursor!r}")
    return (xid, event_id)


_READ = sa.text(
    """
    SELECT id, xid::text AS xid_text, created_at, kind, job_variants_id::text AS job_variants_id,
           job_id::text AS job_id, tenant_id, old_step, old_status, new_step, new_status, error, origin
      FROM pipeline_events
     WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
       AND (xid, id) > (CAST(:xid AS xid8), :id)
     ORDER BY pipeline_events.xid, id  -- the xid8 column, numerically (never its text)
     LIMIT :limit
    """
)


def read_events_after(
    conn_or_engine: Connection | Engine, cursor: str | None, limit: int = 500
) -> tuple[list[Event], str]:
    """Events after ``cursor`` that can no longer be preceded by a late commit, oldest first.

    Returns the events and the cursor to save; pass that cursor to the next call. With no new
    events the cursor comes back unchanged. Run it on a connection that has no writes of its own
    in the current transaction (its own events would be held back until it commits anyway).
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    after_xid, after_id = decode_cursor(cursor)
    params = {"xid": str(after_xid), "id": after_id, "limit": limit}
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as conn:
            rows = conn.execute(_READ, params).all()
    else:
        rows = conn_or_engine.execute(_READ, params).all()
    events = [_event(row._mapping) for row in rows]
    if not events:
        return [], cursor or encode_cursor(after_xid, after_id)
    last = events[-1]
    return events, encode_cursor(last.xid, last.id)


def _event(row: Any) -> Event:
    variant = row["job_variants_id"]
    return Event(
        id=row["id"],
        xid=int(row["xid_text"]),
        created_at=row["created_at"],
        level=Level(row["kind"]),
        job_variants_id=uuid.UUID(variant) if variant else None,
        job_id=uuid.UUID(row["job_id"]),
        tenant_id=row["tenant_id"],
        old_stage=row["old_step"],
        old_status=row["old_status"],
        new_stage=row["new_step"],
        new_status=row["new_status"],
        error=row["error"],
        origin=row["origin"],
    )


# --- NOTIFY: a wake-up hint to cut latency; the outbox stays the record --------------------


@dataclass(frozen=True)
class Notification:
    channel: str
    payload: dict[str, Any]
    pid: int


class NotifyListener:
    """A dedicated connection LISTENing on ``channels``.

    Keep one open across polls: notifications that arrive between two ``wait`` calls are queued
    on the connection, not lost. Use as a context manager, or call ``close``.
    """

    def __init__(self, engine_or_url: Engine | str, channels: Sequence[str] = CHANNELS) -> None:
        import psycopg2

        from variant_pipeline.data.engine import make_engine

        engine = engine_or_url if isinstance(engine_or_url, Engine) else make_engine(engine_or_url, pool=False)
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._conn = psycopg2.connect(*args, **kwargs)
        self._conn.autocommit = True
        with self._conn.cursor() as cur:
            for channel in channels:
                cur.execute(f'LISTEN "{_channel(channel)}"')

    def wait(self, timeout_s: float) -> list[Notification]:
        """Notifications already queued, or the first ones to arrive within ``timeout_s`` ([] on timeout)."""
        self._conn.poll()
        if not self._conn.notifies:
            ready, _, _ = select.select([self._conn], [], [], max(timeout_s, 0.0))
            if ready:
                self._conn.poll()
        received = [
            Notification(channel=n.channel, payload=_payload(n.payload), pid=n.pid) for n in self._conn.notifies
        ]
        self._conn.notifies.clear()
        return received

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _channel(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"invalid channel name {name!r}")
    return name


def _payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"raw": value}
