#!/usr/bin/env python
"""Throughput of the two model backends, side by side (a benchmark, not a test).

For each backend (``local``: models in every run; ``ray``: Ray Serve replicas shared by every run)
this starts the system the way the demo does, in one fresh throw-away home (embedded PostgreSQL,
schema, tiny models, Dagster daemon, no web server; for ``ray`` also a local Ray head on loopback
with the families deployed and warmed by one job first), submits N jobs of 3 variants at once and
waits for all of them. It prints one table:

- jobs/min, and each job's wall time (submit to its last stage done) p50 / p95;
- the wall time of the batch, the sum of stage times (``stage_attempts``), and for ``ray`` the
  replicas' pure compute (seconds inside model calls);
- model loads per job (local: loads in the run workers, from each materialization's
  ``model_loads_in_run``; ray: the replicas' loads during the measured batch);
- mean batch size of the model calls (ray: the replicas' histograms; local: every call is one
  run's);
- peak resident memory of a run worker (sampled every 0.25 s), and of each replica (its own
  ``ru_maxrss``);
- CPU seconds by kind of process during the batch (run workers, replicas, Ray, PostgreSQL, the
  daemon and code server), the same per second for 10 s before it, and a run worker's mean;
- the mean attempt time of each stage.

``--profile PREFIX`` records the daemon, code server and run workers with py-spy (samples holding
the GIL) into ``PREFIX.<backend>.txt``; ``--max-concurrent-runs N`` overrides ``dagster.yaml``'s.

    .venv/bin/python scripts/bench_throughput.py                 # 4 jobs x 3 variants
    .venv/bin/python scripts/bench_throughput.py --jobs 2 --backends ray --json out.json
    .venv/bin/python scripts/bench_throughput.py --backends ray --profile /tmp/prof
    .venv/bin/python scripts/bench_throughput.py --backends local --asset-roots disk,s3   # disk vs SeaweedFS
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from variant_pipeline.config import apply_offline_defaults  # noqa: E402

apply_offline_defaults()  # the model libraries' offline switches, before any of them is imported

_INHERITED = ("DATABASE_URL", "DAGSTER_DATABASE_URL", "VP_DAGSTER_STORAGE_URL", "DAGSTER_HOME",
              "VP_MODEL_BACKEND", "RAY_ADDRESS")


@dataclass
class BackendResult:
    backend: str
    jobs: int
    variants: int
    wall_s: float
    jobs_per_min: float
    job_wall_p50_s: float
    job_wall_p95_s: float
    stage_seconds: float
    compute_seconds: float | None
    loads_per_job: float
    mean_batch_size: float
    run_worker_peak_rss_mib: float
    replica_peak_rss_mib: dict[str, float] = field(default_factory=dict)
    setup_s: float = 0.0  # head start + deploy + warm-up job (ray), not in the figures above
    failed: int = 0
    stage_mean_s: dict[str, float] = field(default_factory=dict)  # per stage, mean attempt time
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per kind of process, batch only
    cpu_other: list[tuple[float, str]] = field(default_factory=list)  # which "other" processes used it
    idle_cpu_per_s: dict[str, float] = field(default_factory=dict)  # the same with nothing to do, per second
    run_worker_cpu_s: float = 0.0  # mean CPU seconds of one run worker


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class RssSampler:
    """Peak RSS of the daemon's run workers (the code server's spawned run processes)."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.peak = 0
        self.worker_cpu: dict[int, float] = {}  # pid -> last CPU seconds seen (missing at most 0.25 s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.25):
            try:
                children = psutil.Process(self.root_pid).children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for p in children:
                try:
                    # Runs are spawned by the code server (multiprocessing "spawn" children).
                    cmdline = " ".join(p.cmdline())
                    if "multiprocessing" in cmdline and "resource_tracker" not in cmdline:
                        self.peak = max(self.peak, p.memory_info().rss)
                        t = p.cpu_times()
                        self.worker_cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cpu_kind(name: str, cmdline: str) -> str:
    if name.startswith("postgres"):
        return "postgres"
    if name.startswith("ray::ServeReplica"):
        return "replicas"
    if name.startswith("ray::") or name in ("gcs_server", "raylet") or "ray/" in cmdline or "ray." in cmdline:
        return "ray system"
    if "multiprocessing" in cmdline and "resource_tracker" not in cmdline:
        return "run workers"
    if "dagster api grpc" in cmdline:
        return "code server"
    if "dagster-daemon" in cmdline:
        return "dagster daemon"
    return "other"


class CpuLedger:
    """CPU seconds each kind of process used between ``start`` and ``stop``.

    Run workers are spawned by the code server: one that ended in between is counted through the
    code server's reaped-children time (a run worker's own children, tesseract, are in its).
    """

    def __init__(self) -> None:
        self._start: dict[tuple[int, str], tuple[str, float]] = {}
        self.by_kind: dict[str, float] = {}
        self.top_other: list[tuple[float, str]] = []  # the largest "other" processes, to name them

    _names: dict[int, str] = {}

    @staticmethod
    def _snapshot() -> dict[tuple[int, str], tuple[str, float]]:
        import psutil

        out = {}
        for p in psutil.process_iter(["name", "cmdline", "cpu_times"]):
            t = p.info["cpu_times"]
            if t is None:
                continue
            kind = _cpu_kind(p.info["name"] or "", " ".join(p.info["cmdline"] or ()))
            CpuLedger._names[p.pid] = f"{p.pid} {' '.join(p.info['cmdline'] or ())[:100]}"
            children = t.children_user + t.children_system
            if kind == "code server":  # its reaped children are the ended run workers
                out[(p.pid, "own")] = (kind, t.user + t.system)
                out[(p.pid, "children")] = ("run workers", children)
            elif kind == "dagster daemon":  # its only child is the code server, counted above
                out[(p.pid, "own")] = (kind, t.user + t.system)
            else:
                out[(p.pid, "own")] = (kind, t.user + t.system + children)
        return out

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> None:
        for key, (kind, cpu) in self._snapshot().items():
            used = cpu - self._start.get(key, (kind, 0.0))[1]
            self.by_kind[kind] = round(self.by_kind.get(kind, 0.0) + used, 1)
            if kind == "other" and used > 1.0:
                self.top_other.append((round(used, 1), self._names.get(key[0], str(key[0]))))
        self.top_other.sort(reverse=True)


def _replica_totals() -> dict[str, dict[str, Any]]:
    from variant_pipeline.models.serving import replica_stats

    return {s["replica"]: s for s in replica_stats()}


def _submit_and_wait(app_url: str, n_jobs: int, timeout_s: float) -> tuple[list[Any], dict[str, float], float]:
    """Submit ``n_jobs`` at once; returns the jobs, each job's end time, and the submit time."""
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.data.jobs import get_job_status
    from variant_pipeline.services import submit_sample_job
    from variant_pipeline.stages import LAST_JOB_STAGE

    t0 = time.monotonic()
    jobs = [submit_sample_job(app_url, variants=3) for _ in range(n_jobs)]
    ended: dict[str, float] = {}
    engine = get_engine(app_url)
    while len(ended) < len(jobs):
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"only {len(ended)} of {len(jobs)} jobs ended within {timeout_s:g} s")
        for job in jobs:
            key = str(job.job_id)
            if key in ended:
                continue
            status = get_job_status(engine, job.job_id)
            if status.status == "failed" or (status.stage, status.status) == (LAST_JOB_STAGE, "done"):
                ended[key] = time.monotonic()
        time.sleep(0.25)
    return jobs, ended, t0


def _stage_seconds(app_url: str, job_ids: list[str]) -> tuple[float, int]:
    from variant_pipeline.data.audit import stage_time_of_jobs
    from variant_pipeline.data.engine import get_engine

    with get_engine(app_url).connect() as conn:
        return stage_time_of_jobs(conn, job_ids)


def _stage_means(app_url: str, job_ids: list[str]) -> dict[str, float]:
    """Mean attempt time per stage, to see where a variant's time goes."""
    from variant_pipeline.data.audit import mean_stage_times_of_jobs
    from variant_pipeline.data.engine import get_engine

    with get_engine(app_url).connect() as conn:
        means = mean_stage_times_of_jobs(conn, job_ids)
    return {stage: round(mean, 2) for stage, mean in means.items()}


def _run_ids() -> set[str]:
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        return {r.run_id for r in instance.get_runs()}


def _local_loads(earlier_runs: set[str]) -> int:
    """Model loads in the run workers: each run's last materialization holds its process's loads
    (runs of an earlier batch in the same home are left out)."""
    import dagster as dg

    from variant_pipeline.stages import STAGES

    loads = 0
    with dg.DagsterInstance.get() as instance:
        for run in instance.get_runs():
            if run.run_id in earlier_runs:
                continue
            last: dict[str, int] | None = None
            for stage in STAGES:
                records = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage.name)), limit=1000).records
                for r in records:
                    if r.run_id == run.run_id:
                        last = r.asset_materialization.metadata["model_loads_in_run"].value
            loads += sum((last or {}).values())
    return loads


def run_backend(backend: str, n_jobs: int, ray_port: int, timeout_s: float,
                max_runs: int | None = None, profile: Path | None = None, label: str | None = None) -> BackendResult:
    from variant_pipeline.services import prepare_environment, start_services

    saved = {k: os.environ.get(k) for k in _INHERITED}
    os.environ["VP_MODEL_BACKEND"] = backend
    ray_started = False
    setup_started = time.monotonic()
    env = prepare_environment(log=lambda _m: None)
    if max_runs is not None:
        yaml_path = env.dagster_home / "dagster.yaml"
        yaml_path.write_text(yaml_path.read_text().replace("max_concurrent_runs: 4", f"max_concurrent_runs: {max_runs}"))
    try:
        if backend == "ray":
            from variant_pipeline.models.serving import start_and_deploy

            address, ray_started = start_and_deploy(env.settings, ray_port, num_cpus=2, log=lambda _m: None)
            os.environ["RAY_ADDRESS"] = env.env["RAY_ADDRESS"] = address
        services = start_services(env, webserver_port=None, log=lambda _m: None)
        try:
            if backend == "ray":  # warm: the replicas load their models before the measured batch
                _submit_and_wait(env.app_url, 1, timeout_s)
                before = _replica_totals()
            setup_s = time.monotonic() - setup_started
            idle = CpuLedger()
            idle.start()
            time.sleep(10)
            idle.stop()
            earlier_runs = _run_ids()
            ledger = CpuLedger()
            ledger.start()
            spy = None if profile is None else subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses", "--gil", "--format", "raw",
                 "--rate", "50", "-o", str(profile.with_suffix(f".{backend}.txt")),
                 "--pid", str(services.processes["daemon"].pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with RssSampler(services.processes["daemon"].pid) as sampler:
                jobs, ended, t0 = _submit_and_wait(env.app_url, n_jobs, timeout_s)
            ledger.stop()
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=120)
            wall = max(ended.values()) - t0
            job_walls = [ended[str(j.job_id)] - t0 for j in jobs]
            stage_s, failed = _stage_seconds(env.app_url, [str(j.job_id) for j in jobs])
            stage_means = _stage_means(env.app_url, [str(j.job_id) for j in jobs])
            compute, replica_rss, mean_batch = None, {}, 1.0
            if backend == "ray":
                after = _replica_totals()
                loads = sum(s["loads"] - before.get(r, {}).get("loads", 0) for r, s in after.items())
                compute = sum(s["compute_s"] - before.get(r, {}).get("compute_s", 0.0) for r, s in after.items())
                calls = items = 0
                for r, s in after.items():
                    old = before.get(r, {}).get("batch_sizes", {})
                    for size, count in s["batch_sizes"].items():
                        n = count - old.get(size, 0)
                        calls += n
                        items += n * int(size)
                mean_batch = items / calls if calls else 0.0
                replica_rss = {s["family"]: round(s["peak_rss_bytes"] / 2**20, 1) for s in after.values()}
            else:
                loads = _local_loads(earlier_runs)
        finally:
            services.stop()
    finally:
        if ray_started:
            import ray

            from variant_pipeline.models.ray_head import stop_head

            ray.shutdown()
            stop_head(env.settings)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return BackendResult(
        backend=label or backend, jobs=n_jobs, variants=3 * n_jobs, wall_s=round(wall, 1),
        jobs_per_min=round(n_jobs / wall * 60, 2), job_wall_p50_s=round(statistics.median(job_walls), 1),
        job_wall_p95_s=round(_percentile(job_walls, 0.95), 1), stage_seconds=round(stage_s, 1),
        compute_seconds=None if compute is None else round(compute, 2), loads_per_job=round(loads / n_jobs, 2),
        mean_batch_size=round(mean_batch, 2), run_worker_peak_rss_mib=round(sampler.peak / 2**20, 1),
        replica_peak_rss_mib=replica_rss, setup_s=round(setup_s, 1), failed=failed, stage_mean_s=stage_means,
        cpu_s=ledger.by_kind, cpu_other=ledger.top_other[:5], idle_cpu_per_s={k: round(v / 10, 3) for k, v in idle.by_kind.items()},
        run_worker_cpu_s=round(statistics.mean(sampler.worker_cpu.values()), 2) if sampler.worker_cpu else 0.0,
    )


def _table(results: list[BackendResult]) -> str:
    rows = [
        ("jobs x variants", lambda r: f"{r.jobs} x 3"),
        ("wall (s)", lambda r: f"{r.wall_s}"),
        ("jobs/min", lambda r: f"{r.jobs_per_min}"),
        ("job wall p50 / p95 (s)", lambda r: f"{r.job_wall_p50_s} / {r.job_wall_p95_s}"),
        ("sum of stage times (s)", lambda r: f"{r.stage_seconds}"),
        ("pure model compute (s)", lambda r: "-" if r.compute_seconds is None else f"{r.compute_seconds}"),
        ("model loads per job", lambda r: f"{r.loads_per_job}"),
        ("mean batch size", lambda r: f"{r.mean_batch_size}"),
        ("run worker peak RSS (MiB)", lambda r: f"{r.run_worker_peak_rss_mib}"),
        ("replica peak RSS (MiB)", lambda r: ", ".join(f"{k} {v}" for k, v in r.replica_peak_rss_mib.items()) or "-"),
        ("setup before the batch (s)", lambda r: f"{r.setup_s}"),
        ("stages failed for good", lambda r: f"{r.failed}"),
    ]
    from variant_pipeline.stages import STAGE_NAMES

    kinds = sorted({k for r in results for k in r.cpu_s})
    rows += [(f"CPU s, {kind}", lambda r, k=kind: f"{r.cpu_s.get(k, 0.0)}") for kind in kinds]
    rows += [(f"idle CPU s per s, {kind}", lambda r, k=kind: f"{r.idle_cpu_per_s.get(k, 0.0)}") for kind in kinds]
    rows.append(("CPU s per run worker (mean)", lambda r: f"{r.run_worker_cpu_s}"))

    for stage in STAGE_NAMES:
        rows.append((f"mean {stage} attempt (s)", lambda r, s=stage: f"{r.stage_mean_s.get(s, '-')}"))
    header = "| | " + " | ".join(r.backend for r in results) + " |"
    lines = [header, "|---" * (len(results) + 1) + "|"]
    lines += ["| " + name + " | " + " | ".join(f(r) for r in results) + " |" for name, f in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="jobs of 3 variants submitted at once (default 4)")
    parser.add_argument("--backends", default="local,ray", help="comma-separated, in order (default local,ray)")
    parser.add_argument("--ray-port", type=int, default=6393, help="GCS port of the local Ray head (default 6393)")
    parser.add_argument("--asset-roots", default="disk",
                        help="comma-separated: disk (the home's directory) and/or s3 (a bucket of a SeaweedFS "
                        "server this script starts on 127.0.0.1); each backend runs once per root (default disk)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for a batch")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--max-concurrent-runs", type=int, help="override dagster.yaml's max_concurrent_runs")
    parser.add_argument("--profile", type=Path, help="py-spy the daemon, code server and run workers during the "
                        "batch into PROFILE.<backend>.txt (raw stacks; needs py-spy)")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="vp-bench-tp-"))
    os.environ["VARIANT_PIPELINE_HOME"] = str(home)
    for name in ("DATABASE_URL", "DAGSTER_DATABASE_URL", "VP_DAGSTER_STORAGE_URL", "DAGSTER_HOME", "RAY_ADDRESS"):
        os.environ.pop(name, None)  # a fresh embedded home, nothing of the caller's
    roots = [r.strip() for r in args.asset_roots.split(",") if r.strip()]
    if set(roots) - {"disk", "s3"}:
        parser.error(f"--asset-roots takes disk and/or s3, got {args.asset_roots!r}")
    results = []
    s3 = None
    try:
        if "s3" in roots:
            from tests.fixtures.s3 import SeaweedServer

            s3 = SeaweedServer(home / "seaweedfs")
            s3.start()
        for backend in args.backends.split(","):
            for root in roots:
                label = backend.strip() if roots == ["disk"] else f"{backend.strip()}, {root}"
                print(f"running {args.jobs} jobs x 3 variants with the {backend} backend, assets on {root} ...",
                      flush=True)
                extra = {}
                if root == "s3":
                    bucket = f"vp-bench-{len(results)}"
                    s3.create_bucket(bucket)
                    extra = s3.env(bucket)
                os.environ.update(extra)
                try:
                    results.append(run_backend(backend.strip(), args.jobs, args.ray_port, args.timeout,
                                               args.max_concurrent_runs, args.profile, label))
                finally:
                    for name in extra:
                        os.environ.pop(name, None)
    finally:
        from variant_pipeline.data.embedded_pg import stop_embedded_server

        if s3 is not None:
            s3.stop()
        stop_embedded_server()
        shutil.rmtree(home, ignore_errors=True)
    print(_table(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
