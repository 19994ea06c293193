"""The outbox reader never skips or repeats an event, whatever the commit order."""

from __future__ import annotations

import random
import threading
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.fixtures.db import create_job
from tests.fixtures.state import set_variant_state
from variant_pipeline.data.engine import make_engine
from variant_pipeline.data.outbox import (
    CHANNELS,
    Notification,
    NotifyListener,
    decode_cursor,
    encode_cursor,
    read_events_after,
)
from variant_pipeline.stages import VARIANT_STAGES


def all_committed_event_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT id FROM pipeline_events ORDER BY id")).scalars())


def drain(engine: Engine, cursor: str | None, limit: int = 500) -> tuple[list[int], str]:
    ids: list[int] = []
    while True:
        events, cursor = read_events_after(engine, cursor, limit=limit)
        if not events:
            return ids, cursor
        ids += [e.id for e in events]


def change_state(conn: sa.Connection, variant_id: uuid.UUID, status: str) -> int:
    """Move a variant's status and return the id of the event this wrote (in this transaction)."""
    set_variant_state(conn, variant_id, VARIANT_STAGES[1].name, status)
    return conn.execute(
        sa.text("SELECT max(id) FROM pipeline_events WHERE job_variants_id = :v"), {"v": str(variant_id)}
    ).scalar_one()


def test_cursor_round_trip_and_malformed_cursors() -> None:
    assert decode_cursor(encode_cursor(2**40, 7)) == (2**40, 7)
    assert decode_cursor(None) == (0, 0)
    for bad in ("nonsense", '{"xid": "x", "id": 1}', '{"id": 1}', "[]", '{"xid": "-1", "id": 0}'):
        with pytest.raises(ValueError, match="malformed outbox cursor"):
            decode_cursor(bad)


@pytest.mark.parametrize("older_gets_lower_id", [True, False])
def test_late_commit_of_an_older_transaction_is_not_skipped(engine: Engine, older_gets_lower_id: bool) -> None:
    # Two jobs, so the two writers do not serialise on one job row.
    variant_a = create_job(engine, variants=1, tenant_id="ta").variant_ids[0]
    variant_b = create_job(engine, variants=1, tenant_id="tb").variant_ids[0]
    submitted, cursor = drain(engine, None)

    conn_a = engine.connect()
    conn_b = engine.connect()
    try:
        # A is the older transaction: it gets its transaction id first.
        conn_a.execute(sa.text("SELECT pg_current_xact_id()"))
        if older_gets_lower_id:
            event_a = change_state(conn_a, variant_a, "running")
            event_b = change_state(conn_b, variant_b, "running")
        else:
            event_b = change_state(conn_b, variant_b, "running")
            event_a = change_state(conn_a, variant_a, "running")
        assert (event_a < event_b) == older_gets_lower_id
        conn_b.commit()  # the newer transaction commits first

        # B's event is committed, but returning it now would move the cursor past A's.
        seen_between, cursor = drain(engine, cursor)
        assert event_b in all_committed_event_ids(engine)
        assert seen_between == []

        conn_a.commit()
        seen_after, cursor = drain(engine, cursor)
        # Both, each exactly once, older transaction first.
        assert seen_after[0] == event_a
        assert seen_after.count(event_a) == 1 and seen_after.count(event_b) == 1
        assert sorted(seen_after) == [e for e in all_committed_event_ids(engine) if e not in submitted]
        assert drain(engine, cursor)[0] == []
    finally:
        conn_a.close()
        conn_b.close()


def test_a_naive_last_id_cursor_would_have_skipped(engine: Engine) -> None:
    """The scenario above really is a trap: an id cursor taken between the commits skips A."""
    variant_a = create_job(engine, variants=1, tenant_id="ta").variant_ids[0]
    variant_b = create_job(engine, variants=1, tenant_id="tb").variant_ids[0]
    with engine.connect() as conn_a, engine.connect() as conn_b:
        event_a = change_state(conn_a, variant_a, "running")
        event_b = change_state(conn_b, variant_b, "running")
        conn_b.commit()
        naive_cursor = max(all_committed_event_ids(engine))  # what a "last id" reader saves now
        conn_a.commit()
    assert event_a < event_b <= naive_cursor  # A's event is below the saved id: never read


def test_rolled_back_events_never_appear_and_do_not_block(engine: Engine) -> None:
    variant = create_job(engine, variants=1).variant_ids[0]
    _, cursor = drain(engine, None)
    with engine.connect() as conn:
        lost = change_state(conn, variant, "running")
        conn.rollback()
    with engine.begin() as conn:
        kept = change_state(conn, variant, "failed")
    seen, _ = drain(engine, cursor)
    assert lost not in seen and kept in seen


def test_limit_pages_through_in_order_without_gaps(engine: Engine) -> None:
    for i in range(4):
        create_job(engine, variants=3, tenant_id=f"t{i}")
    paged, _ = drain(engine, None, limit=3)
    assert sorted(paged) == all_committed_event_ids(engine)
    assert len(paged) == len(set(paged)) == 16


def test_concurrent_writers_and_reader_lose_and_repeat_nothing(engine: Engine) -> None:
    writers, transactions_each = 6, 25
    engine = make_engine(engine.url, pool_size=writers + 3)
    try:
        variants = [create_job(engine, variants=2, tenant_id=f"w{i}").variant_ids for i in range(writers)]
        stop = threading.Event()
        seen: list[int] = []
        errors: list[BaseException] = []

        def write(worker: int) -> None:
            rng = random.Random(worker)
            try:
                for n in range(transactions_each):
                    with engine.connect() as conn:
                        for variant in rng.sample(variants[worker], k=rng.randint(1, 2)):
                            change_state(conn, variant, "running" if n % 2 == 0 else "queued")
                            if rng.random() < 0.5:
                                threading.Event().wait(rng.uniform(0, 0.01))  # hold the transaction open
                        if rng.random() < 0.15:
                            conn.rollback()  # these events must never be read
                        else:
                            conn.commit()
            except BaseException as exc:
                errors.append(exc)

        def read() -> None:
            cursor = None
            try:
                while not stop.is_set():
                    events, cursor = read_events_after(engine, cursor, limit=7)
                    seen.extend(e.id for e in events)
                    keys = [(e.xid, e.id) for e in events]
                    assert keys == sorted(keys)
                rest, _ = drain(engine, cursor)
                seen.extend(rest)
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        stop.set()
        reader.join(timeout=60)

        assert errors == []
        committed = all_committed_event_ids(engine)
        assert len(seen) == len(set(seen)), "an event was returned twice"
        assert sorted(seen) == committed, "an event was skipped"
        assert len(committed) > writers * transactions_each  # the writers really wrote
    finally:
        engine.dispose()


def wait_for_notify(url: str, timeout_s: float) -> list[Notification]:
    """One-shot LISTEN on every outbox channel: the first notifications within ``timeout_s``, or []."""
    with NotifyListener(url, CHANNELS) as listener:
        return listener.wait(timeout_s)


def test_wait_for_notify_times_out_quietly(db_url: str) -> None:
    assert wait_for_notify(db_url, timeout_s=0.2) == []


def test_wait_for_notify_wakes_on_a_state_change(engine: Engine, db_url: str) -> None:
    variant = create_job(engine, variants=1).variant_ids[0]
    result: list = []
    listening = threading.Event()

    def listen() -> None:
        with NotifyListener(db_url, ["job_variant_state_changed"]) as listener:
            listening.set()
            result.extend(listener.wait(timeout_s=30))

    t = threading.Thread(target=listen)
    t.start()
    assert listening.wait(timeout=30)
    with engine.begin() as conn:
        event_id = change_state(conn, variant, "running")
    t.join(timeout=60)
    assert [n.payload["event_id"] for n in result] == [event_id]


def test_events_are_read_in_numeric_xid_order_across_a_digit_boundary(engine: Engine) -> None:
    """Transaction ids 99 and 100 (or 9999 and 10000): ordered as text, 100 would come first and
    a page of one would move the cursor past 99 for good. Seen in CI when real xids crossed 10000."""
    with engine.begin() as conn:
        ids = [conn.execute(sa.text(
            """INSERT INTO pipeline_events (xid, kind, job_id, tenant_id, new_step, new_status, origin)
               VALUES (CAST(:xid AS xid8), 'job', gen_random_uuid(), 't', 'img_gen', 'queued', 'test')
               RETURNING id"""), {"xid": xid}).scalar_one() for xid in ("100", "99")]
    first, cursor = read_events_after(engine, None, limit=1)
    second, cursor = read_events_after(engine, cursor, limit=1)
    assert [(e.xid, e.id) for e in first + second] == [(99, ids[1]), (100, ids[0])]
