"""The Ray cluster behind the ``ray`` model backend: a local head on loopback, or an existing one.

``serve start`` runs ``ray start --head --block`` in its own session, bound to 127.0.0.1 (Ray
otherwise swaps loopback for the machine's routable address), on an explicit GCS port (Ray's
default, 6379, is Redis's), without a dashboard, and records the head under
``$VARIANT_PIPELINE_HOME/ray/head.json``. ``serve stop`` ends exactly the processes of that
head, by pid: other Ray clusters on the machine are left alone (``ray stop`` would end them all).
A run connects to ``RAY_ADDRESS`` when it is set, else to the recorded head.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from variant_pipeline.config import PROJECT_ROOT, Settings

RAY_NAMESPACE = "variant_pipeline"
_CONNECT_LOCK = threading.Lock()


class ModelServerError(RuntimeError):
    """A served model call failed for a reason outside the call (transient: the stage is retried)."""


class ModelServerUnavailable(ModelServerError):
    """No Ray cluster answers at the configured address."""


@dataclass(frozen=True)
class HeadRecord:
    address: str
    port: int
    pid: int  # the `ray start --block` process; every process of the head descends from it
    temp_dir: str
    log: str


def _record_path(settings: Settings) -> Path:
    return settings.home / "ray" / "head.json"


def read_record(settings: Settings) -> HeadRecord | None:
    path = _record_path(settings)
    if not path.is_file():
        return None
    return HeadRecord(**json.loads(path.read_text()))


def ray_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Ray processes and drivers: loopback stays loopback, auth is the same on both
    sides (``RAY_AUTH_MODE``, disabled unless the user chose token auth), no usage reports."""
    env = dict(os.environ)
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(extra or {})
    return env


def cluster_address(settings: Settings) -> str:
    if settings.ray_address:
        return settings.ray_address
    record = read_record(settings)
    if record is None:
        raise ModelServerUnavailable(
            "VP_MODEL_BACKEND=ray but no Ray cluster is configured: run `variant-pipeline serve start` "
            "or set RAY_ADDRESS")
    return record.address


def _reachable(address: str, timeout_s: float = 2.0) -> bool:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rpartition(":")[0]
    return host in ("127.0.0.1", "localhost", "[::1]")


def prepare_driver_env(settings: Settings) -> None:
    """Ray's switches for this process; they must be set before ``import ray`` (Ray reads them
    then). On a loopback cluster the driver stays on 127.0.0.1 too (Ray would otherwise swap it
    for the routable address and never reach the head)."""
    if "ray" in sys.modules:
        return
    if _is_loopback(settings.ray_address or "127.0.0.1:0"):
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def connect(settings: Settings) -> str:
    """Connect this process to the cluster once (a driver); returns its address.

    The GCS port is probed first, so a cluster that is down is one clear error naming the
    address, at once, instead of Ray's own minute of connection retries.
    """
    address = cluster_address(settings)
    if not _reachable(address):
        raise ModelServerUnavailable(
            f"Ray cluster at {address} is not reachable (is it running? `variant-pipeline serve status`)")
    prepare_driver_env(settings)
    import ray

    with _CONNECT_LOCK:  # stages of one run may connect from several threads
        if ray.is_initialized():
            return address
        try:
            ray.init(address=address, namespace=RAY_NAMESPACE, log_to_driver=False, logging_level="WARNING")
        except Exception as exc:
            raise ModelServerUnavailable(f"Ray cluster at {address} refused the connection: {exc}") from exc
    return address


def bind_to_node_ip() -> None:
    """In a replica: Serve binds the replica's internal gRPC server to every interface ("[::]");
    bind it to the node's own address instead (127.0.0.1 on a loopback head)."""
    import ray
    from ray.serve._private import replica

    node_ip = ray.util.get_node_ip_address()
    host = f"[{node_ip}]" if ":" in node_ip else node_ip
    original = replica.add_port_to_grpc_server

    def bound(server: Any, address: str) -> int:
        return original(server, address.replace("[::]", host, 1))

    replica.add_port_to_grpc_server = bound


def head_alive(record: HeadRecord) -> bool:
    import psutil

    try:
        return psutil.Process(record.pid).is_running() and _reachable(record.address, 1.0)
    except psutil.NoSuchProcess:
        return False


def start_head(settings: Settings, port: int, num_cpus: int | None = None, timeout_s: float = 90.0) -> HeadRecord:
    """Start a local head on 127.0.0.1:``port`` and record it; an already running one is kept."""
    record = read_record(settings)
    if record is not None and head_alive(record):
        return record
    if port == 6379:
        raise ValueError("port 6379 is Redis's; give the Ray head another port (--port)")
    if _reachable(f"127.0.0.1:{port}", 0.5):
        raise ValueError(f"port {port} on 127.0.0.1 is already in use; choose another --port")
    ray_dir = settings.home / "ray"
    ray_dir.mkdir(parents=True, exist_ok=True)
    # Short: Ray's Unix sockets live under it and socket paths are limited to about 107 bytes.
    temp_dir = f"/tmp/vp-ray-{port}"
    log = ray_dir / "head.log"
    cmd = [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--port", str(port),
        "--ray-client-server-port", str(port + 1), "--dashboard-agent-listen-port", str(port + 2),
        "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp_dir,
    ]
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    # The replicas import this project: put it on their path, whatever the caller's directory.
    pythonpath = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=ray_env({"PYTHONPATH": pythonpath}), start_new_session=True)
    record = HeadRecord(f"127.0.0.1:{port}", port, proc.pid, temp_dir, str(log))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise ModelServerUnavailable(f"ray start exited with code {proc.returncode}: {' | '.join(tail)}")
        if "Ray runtime started" in log.read_text(errors="replace") and _reachable(record.address, 1.0):
            _record_path(settings).write_text(json.dumps(asdict(record)))
            return record
        time.sleep(0.5)
    _terminate_tree(proc.pid)
    raise ModelServerUnavailable(f"the Ray head did not start within {timeout_s:g} s (log: {log})")


def _terminate_tree(pid: int, grace_s: float = 10.0) -> int:
    """SIGTERM a process and all its descendants, SIGKILL what is left after ``grace_s``."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return 0
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _gone, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    return len(procs)


def stop_head(settings: Settings) -> int:
    """Stop the recorded head and every process it started; returns how many processes ended."""
    record = read_record(settings)
    if record is None:
        return 0
    ended = _terminate_tree(record.pid)
    _record_path(settings).unlink(missing_ok=True)
    return ended
