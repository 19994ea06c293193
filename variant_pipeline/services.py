"""Starting the whole thing: database, schema, models, Dagster instance, daemon and web UI.

Used by ``variant-pipeline demo`` (scripts/demo.sh) and by the end-to-end tests, so the tests
start the system exactly the way a user does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from variant_pipeline.config import PROJECT_ROOT, Settings, load_settings
from variant_pipeline.deployment import DAGSTER_YAML, WORKSPACE_YAML

SAMPLE_PRODUCT = Path(__file__).resolve().parent / "sample" / "coffee.jpg"


@dataclass
class Environment:
    settings: Settings
    app_url: str
    dagster_url: str
    dagster_home: Path
    env: dict[str, str]  # what the daemon, the web server and their run workers inherit
    embedded: bool  # True when this process started (or found) the embedded PostgreSQL


def ensure_tiny_bundle(settings: Settings, log=print) -> None:
    """Build the tiny offline model bundle if the settings point at it and it is not there yet."""
    from variant_pipeline.models.registry import model_location

    vlm_model = model_location(settings, "vlm_model")
    if not Path(vlm_model).exists() and settings.models_dir.as_posix() in vlm_model:
        from variant_pipeline.models.tiny import build_tiny_bundle

        log(f"building the tiny offline model bundle in {settings.models_dir} (first run only)")
        build_tiny_bundle(settings.models_dir)


def prepare_environment(log=print) -> Environment:
    """Database up, schema applied, tiny models built if absent, Dagster home written."""
    from variant_pipeline.data.engine import (
        app_database_url,
        dagster_database_url,
        get_engine,
        redact,
        uses_embedded_server,
    )
    from variant_pipeline.data.migrations import upgrade

    settings = load_settings()
    embedded = uses_embedded_server()
    app_url = app_database_url()
    dagster_url = dagster_database_url()
    applied = upgrade(get_engine(app_url))
    log(f"database: {redact(app_url)} ({len(applied)} migrations applied now)")

    ensure_tiny_bundle(settings, log)

    dagster_home = settings.home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    if target.is_symlink() or target.exists():
        target.unlink()
    shutil.copyfile(DAGSTER_YAML, target)

    env = dict(os.environ)
    env.update(
        DAGSTER_HOME=str(dagster_home),
        VP_DAGSTER_STORAGE_URL=dagster_url,
        DATABASE_URL=app_url,
        VARIANT_PIPELINE_HOME=str(settings.home),
        PYTHONUNBUFFERED="1",
    )
    # Create Dagster's schema once, before the daemon and the web server race to create it.
    os.environ.update({k: env[k] for k in ("DAGSTER_HOME", "VP_DAGSTER_STORAGE_URL", "DATABASE_URL")})
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots("gpu", settings.gpu_pool_limit)
    return Environment(settings, app_url, dagster_url, dagster_home, env, embedded)


@dataclass
class Services:
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def stop(self, timeout_s: float = 20.0) -> None:
        for proc in reversed(list(self.processes.values())):
            if proc.poll() is None:
                # Each service leads its own process group: its code servers and run workers go too.
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + timeout_s
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # Children outlive their leader (a code server was seen to): the group goes with it.
            _reap_group(proc.pid, grace_s=max(1.0, deadline - time.monotonic()))
        self.processes.clear()


def _reap_group(pgid: int, grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)  # anyone left in the group?
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def start_services(environment: Environment, *, webserver_port: int | None = 3000, daemon: bool = True,
                   log=print) -> Services:
    """The daemon (unless ``daemon`` is False: another host runs it) and the web server (unless
    ``webserver_port`` is None), each in its own process group, logging under the home."""
    services = Services()
    log_dir = environment.settings.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    commands = {"daemon": [_bin("dagster-daemon"), "run", "-w", str(WORKSPACE_YAML)]} if daemon else {}
    if webserver_port is not None:
        commands["webserver"] = [_bin("dagster-webserver"), "-h", "127.0.0.1", "-p", str(webserver_port),
                                  "-w", str(WORKSPACE_YAML)]
    try:
        for name, command in commands.items():
            path = log_dir / f"{name}.log"
            handle = path.open("ab")
            services.processes[name] = subprocess.Popen(
                command, cwd=PROJECT_ROOT, env=environment.env, stdout=handle, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            services.logs[name] = path
            log(f"started {name} (pid {services.processes[name].pid}, log {path})")
        if webserver_port is not None:
            _wait_http(f"http://127.0.0.1:{webserver_port}/server_info", services, timeout_s=180)
    except BaseException:
        services.stop()
        raise
    return services


def _wait_http(url: str, services: Services, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, proc in services.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {services.logs[name]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


SAMPLE_JOB = {
    "tenant_id": "demo-cafe",
    "description_kor": "갓 구운 크루아상과 따뜻한 카페라떼 세트",
    "ad_copy_eng": "Warm latte, flaky croissant: your morning, perfected.",
    "ad_copy_kor": "따뜻한 라떼 한 잔",
    "prompt": "a cozy cafe table by the window, soft morning light",
}


def submit_sample_job(app_url: str, variants: int = 3):
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.data.jobs import JobRequest, add_tenant, submit_job
    from variant_pipeline.data.storage import AssetStore

    engine = get_engine(app_url)
    add_tenant(engine, SAMPLE_JOB["tenant_id"], "Demo cafe")
    request = JobRequest.build(
        tenant_id=SAMPLE_JOB["tenant_id"], description_kor=SAMPLE_JOB["description_kor"],
        ad_copy_eng=SAMPLE_JOB["ad_copy_eng"], ad_copy_kor=SAMPLE_JOB["ad_copy_kor"],
        prompt=SAMPLE_JOB["prompt"], image_path=SAMPLE_PRODUCT, variants=variants,
    )
    return submit_job(engine, request, store=AssetStore.from_settings(load_settings()), origin="demo:submit")


def wait_for_job(app_url: str, job_id, *, timeout_s: float = 1800, log=print, poll_s: float = 1.0):
    """Print each change of the job's and its variants' states until the job ends; return the last status."""
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.data.jobs import get_job_status
    from variant_pipeline.stages import LAST_JOB_STAGE

    engine = get_engine(app_url)
    seen: dict[str, tuple[str, str]] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        status = get_job_status(engine, job_id)
        for v in status.variants:
            state = (v.stage, v.status)
            if seen.get(str(v.job_variants_id)) != state:
                seen[str(v.job_variants_id)] = state
                extra = f"  error: {v.error}" if v.error else ""
                log(f"  variant {v.creation_order}: {v.stage:<17} {v.status}{extra}")
        job_state = (status.stage, status.status)
        if seen.get("job") != job_state:
            seen["job"] = job_state
            log(f"  job: {status.stage:<17} {status.status}" + (f"  error: {status.error}" if status.error else ""))
        if job_state == (LAST_JOB_STAGE, "done") or status.status == "failed":
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} did not finish within {timeout_s:.0f} s (now {job_state})")
        time.sleep(poll_s)


IN_FLIGHT_RUN_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def wait_for_runs_to_settle(*, timeout_s: float = 120, poll_s: float = 0.5) -> int:
    """Wait until Dagster has no run in flight; return how many still were at the deadline.

    A job's last stage writes ``(instagram_feed_gen, done)`` before its run reports SUCCESS, so
    stopping the daemon the moment the job looks done can kill that run mid-report.
    """
    import dagster as dg

    statuses = [dg.DagsterRunStatus[name] for name in IN_FLIGHT_RUN_STATUSES]
    deadline = time.monotonic() + timeout_s
    with dg.DagsterInstance.get() as instance:
        while True:
            in_flight = instance.get_runs_count(dg.RunsFilter(statuses=statuses))
            if in_flight == 0 or time.monotonic() > deadline:
                return in_flight
            time.sleep(poll_s)
