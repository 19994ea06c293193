"""Session advisory locks: who may work on a partition now, and which run workers are alive.

A session lock is held on a connection of its own and dropped by the server the moment that
session ends, whatever ended it (a SIGKILL, a lost connection, a server restart). So a lock that
is free tells the recovery sensor that its holder is gone:

- the **partition lock** (``PartitionLock``), held by a worker for the whole stage: a second
  worker cannot take it, and a row ``running`` with its lock free belongs to a dead worker;
- the **run lease** (``RunLease``), held by a run worker from its first stage to its end: a run
  Dagster still calls STARTED whose lease is free has a dead worker.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine


class ClaimRefused(RuntimeError):
    """This worker may not run the stage now; nothing was written."""


class PartitionBusy(ClaimRefused):
    """Another live worker holds the partition."""


def _key(namespace: str, name: str) -> int:
    digest = hashlib.blake2b(f"{namespace}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_key(partition_key: str) -> int:
    """A signed 64-bit advisory-lock key for one partition (variants and jobs have distinct UUIDs)."""
    return _key("vp-partition", partition_key)


def run_lock_key(run_id: str) -> int:
    return _key("vp-run", run_id)


def is_lock_free(conn: Connection, key: int) -> bool:
    """Whether nobody holds the advisory lock ``key``; takes it for the caller's transaction if so."""
    return bool(conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar_one())


class SessionLock:
    """A session advisory lock held on a connection of its own until released (or the session dies)."""

    def __init__(self, engine: Engine, key: int) -> None:
        self._engine = engine
        self._key = key
        self._conn: Connection | None = None

    def _take(self, function: str) -> bool:
        conn = self._engine.connect()
        try:
            got = conn.execute(sa.text(f"SELECT {function}(:k)"), {"k": self._key}).scalar()
            conn.commit()
        except BaseException:
            conn.close()
            raise
        if got is False:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.rollback()
            self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            self._conn.commit()
            self._conn.close()
        except sa.exc.DBAPIError:
            self._discard()  # the session is gone, and the lock with it
        self._conn = None

    def _discard(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:  # already broken; nothing left to release
                pass
        self._conn = None


class PartitionLock(SessionLock):
    """The lock on one partition, held for the stage's length."""

    def __init__(self, engine: Engine, partition_key: str) -> None:
        super().__init__(engine, lock_key(partition_key))

    def try_acquire(self) -> bool:
        return self._take("pg_try_advisory_lock")

    def connection(self) -> Connection:
        """The lock's connection, alive and holding the lock.

        If the session died (a server restart, a dropped connection), the lock went with it:
        reconnect and take it again, or raise ``PartitionBusy`` if someone else has it now. The
        caller's fence check then decides whether this attempt may still write.
        """
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT 1"))
                self._conn.commit()
                return self._conn
            except sa.exc.DBAPIError:
                self._discard()
        if not self.try_acquire():
            raise PartitionBusy("the partition lock was lost and another worker holds it now")
        assert self._conn is not None
        return self._conn


class RunLease(SessionLock):
    """Held by a run worker from its first stage to its end: the recovery sensor's proof of life.

    Dagster's default run launcher cannot tell whether a run worker still lives, so a SIGKILLed
    run would stay STARTED (holding its GPU pool slot) forever. Its lease, a session advisory
    lock, goes away with its database session.
    """

    def __init__(self, engine: Engine, run_id: str) -> None:
        super().__init__(engine, run_lock_key(run_id))

    def acquire(self) -> None:
        # Blocking (pg_advisory_lock returns void): the recovery sensor's probe holds it a moment only.
        self._take("pg_advisory_lock")
