"""Session advisory locks: who may work on a partition now, and which run workers are alive.

A session lock is held on a connection of its own and dropped by the server the moment that
session ends, whatever ended it (a SIGKILL, a lost connection, a server restart). So a lock that
is free tells the recovery sensor that its holder is gone:

- the **partition lock** (``PartitionLock``), held by a worker for the whole stage: a second
  worker cannot take it, and a row ``running`` with its lock free belongs to a dead worker;
- the **run lease** (``RunLease``), held by a run worker from its first stage to its end: a run
  Dagster still calls STARTED whose lease is free has a dead worker.

A worker that is frozen rather than dead (SIGSTOP, a paused VM, a host swapping itself to a halt)
keeps its sockets open, and the kernel answers TCP keepalives for it, so its session would hold
the lock forever. Both locks therefore expire: the session asks the server to end it after
``timeout_s`` idle (``idle_session_timeout``), and a heartbeat thread touches it every quarter of
that while the process runs. A frozen worker's session ends, its partition is recovered by
another, and when it wakes its writes find the lock gone and the fence moved on.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator

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


def wait_for_lock(conn: Connection, key: int) -> None:
    """Take the advisory lock ``key`` for the caller's transaction, waiting for its holder."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


class SessionLock:
    """A session advisory lock held on a connection of its own until released (or the session
    dies, or, with ``timeout_s``, the process stops touching it for that long)."""

    def __init__(self, engine: Engine, key: int, timeout_s: float = 0.0) -> None:
        self._engine = engine
        self._key = key
        self._timeout_s = timeout_s
        self._conn: Connection | None = None
        self._mutex = threading.Lock()  # the connection is shared with the heartbeat thread
        self._stop_heartbeat = threading.Event()

    def _take(self, function: str) -> bool:
        conn = self._engine.connect()
        try:
            got = conn.execute(sa.text(f"SELECT {function}(:k)"), {"k": self._key}).scalar()
            if got is not False and self._timeout_s > 0:
                conn.execute(sa.text("SELECT set_config('idle_session_timeout', :ms, false)"),
                             {"ms": str(int(self._timeout_s * 1000))})
            conn.commit()
        except BaseException:
            conn.close()
            raise
        if got is False:
            conn.close()
            return False
        self._conn = conn
        if self._timeout_s > 0:
            self._stop_heartbeat = threading.Event()
            threading.Thread(target=self._heartbeat, args=(conn, self._stop_heartbeat), daemon=True,
                             name=f"lease-heartbeat-{self._key}").start()
        return True

    def _heartbeat(self, conn: Connection, stop: threading.Event) -> None:
        while not stop.wait(self._timeout_s / 4):
            if not self._mutex.acquire(blocking=False):
                continue  # in use right now: that keeps the session busy anyway
            try:
                if self._conn is not conn:
                    return
                conn.execute(sa.text("SELECT 1"))
                conn.commit()
            except Exception:  # the session is gone; the next use of the lock finds out
                return
            finally:
                self._mutex.release()

    def release(self) -> None:
        self._stop_heartbeat.set()
        with self._mutex:
            if self._conn is None:
                return
            try:
                self._conn.rollback()
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                if self._timeout_s > 0:  # the connection goes back to the pool: no timeout there
                    self._conn.execute(sa.text("SELECT set_config('idle_session_timeout', '0', false)"))
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

    def __init__(self, engine: Engine, partition_key: str, timeout_s: float = 0.0) -> None:
        super().__init__(engine, lock_key(partition_key), timeout_s)

    def try_acquire(self) -> bool:
        return self._take("pg_try_advisory_lock")

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """The lock's connection, alive and holding the lock, for the length of the ``with``.

        If the session died (a server restart, a dropped connection, the lock's timeout while this
        process was frozen), the lock went with it: reconnect and take it again, or raise
        ``PartitionBusy`` if someone else has it now. The caller's fence check then decides
        whether this attempt may still write.
        """
        with self._mutex:
            if self._conn is not None:
                try:
                    self._conn.execute(sa.text("SELECT 1"))
                    self._conn.commit()
                except sa.exc.DBAPIError:
                    self._discard()
            if self._conn is None and not self._take("pg_try_advisory_lock"):
                raise PartitionBusy("the partition lock was lost and another worker holds it now")
            assert self._conn is not None
            yield self._conn


class RunLease(SessionLock):
    """Held by a run worker from its first stage to its end: the recovery sensor's proof of life.

    Dagster's default run launcher cannot tell whether a run worker still lives, so a SIGKILLed
    run would stay STARTED (holding its GPU pool slot) forever. Its lease, a session advisory
    lock, goes away with its database session.
    """

    def __init__(self, engine: Engine, run_id: str, timeout_s: float = 0.0) -> None:
        super().__init__(engine, run_lock_key(run_id), timeout_s)

    def acquire(self) -> None:
        # Blocking (pg_advisory_lock returns void): the recovery sensor's probe holds it a moment only.
        self._take("pg_advisory_lock")
