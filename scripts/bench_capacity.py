#!/usr/bin/env python
"""Capacity at scale, and a burst of jobs (a benchmark, not a test).

In a throw-away home (its own embedded PostgreSQL, schema, Dagster instance):

1. **Fill** (``--variants``, ``--events``): jobs of 3 variants submitted in batches with the
   submission's own SQL (one transaction per ``--batch`` jobs, so the triggers write the outbox
   and the rollup runs as for any submission), then walked through their stages by state
   updates (the writes a run makes) until the outbox holds ``--events`` events, and finished
   (variants done, jobs through their job stages). Their partitions are added to Dagster with
   ``add_dynamic_partitions`` (what the daemon calls), and the outbox sensor's saved cursor is
   moved past the backlog, as if the sensor had read it.
2. **Sensor evaluation**: a burst of ``--burst-jobs`` x 3 variants committed in one transaction,
   then the outbox sensor evaluated in this process as the daemon evaluates it (read, plan,
   partition checks, run requests); nothing is saved.
3. **Burst with the real daemon**: the daemon started, the same kind of burst committed, and the
   time until every run of it exists (run records' ``create_timestamp``) and per tick. Runs stay
   queued (``max_concurrent_runs: 0``) unless ``--execute``: this measures run creation alone.
   ``--profile`` records the daemon and its code server with py-spy meanwhile and prints the
   functions where the time went.
4. ``variant-pipeline status`` (and ``results`` when the CLI has it) on one job, wall time.
5. ``variant-pipeline prune --dry-run`` over the filled home, wall time.
6. ``variant-pipeline metrics`` scrapes, timed in process, with the burst's runs queued.

The Dagster UI at these sizes is measured by scripts/bench_ui.py (pages as a person sees them,
beside bare Dagster, over a real deployment's history); ``--home`` of a home it filled measures
the figures here with that history in place.

    .venv/bin/python scripts/bench_capacity.py --variants 0 --events 0 --burst-jobs 100   # burst only
    .venv/bin/python scripts/bench_capacity.py --variants 100000 --events 1000000 --json cap.json
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from variant_pipeline.config import apply_offline_defaults  # noqa: E402

apply_offline_defaults()  # the model libraries' offline switches, before any of them is imported

TENANT = "bench-capacity"
DESCRIPTION = "얼큰한 부대찌개 2인분"
PROMPT = "a steaming pot of stew on a wooden table"


POOLED_STORAGE = """  custom:
    module: variant_pipeline.deployment.dagster_storage
    class: PooledPostgresStorage
    config:
      postgres_url:
        env: VP_DAGSTER_STORAGE_URL
"""
STOCK_STORAGE = """  postgres:
    postgres_url:
      env: VP_DAGSTER_STORAGE_URL
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- 1. Fill -------------------------------------------------------------------------------------

def submit_batch(engine, n_jobs: int, origin: str) -> tuple[list[str], list[str]]:
    """``n_jobs`` jobs of 3 variants in one transaction, the rows submit_job writes."""
    from variant_pipeline import stages as stage_graph
    from variant_pipeline.data.engine import transaction
    from variant_pipeline.data.upstream import insert_jobs_in_bulk

    with transaction(engine, origin) as conn:
        rows = insert_jobs_in_bulk(conn, TENANT, n_jobs, first_stage=stage_graph.FIRST_VARIANT_STAGE,
                                   desc_kor=DESCRIPTION, prompt=PROMPT)
    return [r[0] for r in rows], sorted({r[1] for r in rows})


def event_count(engine) -> int:
    from variant_pipeline.data import audit

    with engine.connect() as conn:
        return audit.event_count(conn)


def move(engine, level: str, keys: list[str], stage: str, status: str, chunk: int) -> None:
    """State writes as a run makes them, ``chunk`` rows per transaction (each fires the triggers)."""
    from variant_pipeline.data.engine import transaction
    from variant_pipeline.data.partition_state import set_states

    for start in range(0, len(keys), chunk):
        with transaction(engine, "dagster-run:bench-fill") as conn:
            set_states(conn, level, keys[start:start + chunk], stage, status)


def fill(engine, instance, n_variants: int, n_events: int, batch: int) -> dict[str, Any]:
    from variant_pipeline import stages as stage_graph
    from variant_pipeline.assets.partitions import job_partitions, variant_partitions

    started = time.perf_counter()
    variants: list[str] = []
    jobs: list[str] = []
    n_jobs = math.ceil(n_variants / 3)
    for start in range(0, n_jobs, batch):
        v, j = submit_batch(engine, min(batch, n_jobs - start), "bench:fill")
        variants += v
        jobs += j
        if (start // batch) % 10 == 0:
            log(f"fill: submitted {len(jobs)} jobs, {len(variants)} variants")
    submitted_s = time.perf_counter() - started
    # The job stages add 4 events per job at the end, the last variant stage 1 per variant.
    final_events = 4 * len(jobs) + len(variants)
    walked = 0
    for stage in stage_graph.VARIANT_STAGES[:-1]:
        if event_count(engine) + final_events >= n_events:
            break
        for status in ("running", "done"):
            move(engine, "variant", variants, stage.name, status, 5000)
        walked += 1
        log(f"fill: variants through {stage.name}, {event_count(engine)} events")
    move(engine, "variant", variants, stage_graph.LAST_VARIANT_STAGE, "done", 5000)
    for stage in stage_graph.JOB_STAGES:
        for status in ("running", "done"):
            move(engine, "job", jobs, stage.name, status, 5000)
    states_s = time.perf_counter() - started - submitted_s
    t0 = time.perf_counter()
    for start in range(0, len(variants), 10_000):
        instance.add_dynamic_partitions(variant_partitions.name, variants[start:start + 10_000])
    for start in range(0, len(jobs), 10_000):
        instance.add_dynamic_partitions(job_partitions.name, jobs[start:start + 10_000])
    partitions_s = time.perf_counter() - t0
    events = event_count(engine)
    log(f"fill: {len(jobs)} jobs, {len(variants)} variants, {events} events "
        f"(submit {submitted_s:.0f} s, states {states_s:.0f} s, partitions {partitions_s:.0f} s)")
    return {"jobs": len(jobs), "variants": len(variants), "events": events, "stages_walked": walked,
            "submit_s": submitted_s, "states_s": states_s, "partitions_s": partitions_s,
            "sample_job": jobs[0] if jobs else None}


def filled_home(engine, instance) -> dict[str, Any]:
    """What an earlier run's fill left in the home."""
    from variant_pipeline.assets.partitions import job_partitions, variant_partitions
    from variant_pipeline.data import audit

    with engine.connect() as conn:
        jobs, variants = audit.job_and_variant_counts(conn)
        sample = audit.oldest_job_id(conn)
    return {"jobs": jobs, "variants": variants, "events": event_count(engine), "sample_job": sample,
            "variant_partitions": len(instance.get_dynamic_partitions(variant_partitions.name)),
            "job_partitions": len(instance.get_dynamic_partitions(job_partitions.name))}


def outbox_state(instance):
    from variant_pipeline.sensors.outbox import OUTBOX_SENSOR_NAME

    states = [s for s in instance.all_instigator_state() if s.instigator_name == OUTBOX_SENSOR_NAME]
    return states[0] if states else None


def move_cursor_to_end(engine, instance) -> str:
    """Save the outbox sensor's cursor past every event, as after the sensor read the backlog."""
    from variant_pipeline.data import audit
    from variant_pipeline.data.outbox import encode_cursor

    with engine.connect() as conn:
        last = audit.last_event_position(conn)
    cursor = encode_cursor(*last) if last else None
    state = outbox_state(instance)
    instance.update_instigator_state(state.with_data(state.instigator_data._replace(cursor=cursor)))
    return cursor


# --- 2. The sensor, evaluated in this process ---------------------------------------------------


def evaluate_sensor(instance, cursor: str) -> dict[str, Any]:
    import dagster as dg

    from variant_pipeline.definitions import defs
    from variant_pipeline.sensors.outbox import OUTBOX_SENSOR_NAME

    sensor = defs.resolve_sensor_def(OUTBOX_SENSOR_NAME)
    # The daemon hands a sensor its resources (the database) from the definitions: so does this.
    with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                 definitions=defs, resources=defs.resources) as context:
        t0 = time.perf_counter()
        data = sensor.evaluate_tick(context)
        took = time.perf_counter() - t0
    added = sum(len(r.partition_keys) for r in data.dynamic_partitions_requests or [])
    return {"evaluate_s": took, "run_requests": len(data.run_requests or []), "partition_adds": added}


# --- 3. The burst against the real daemon --------------------------------------------------------


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.2) -> float:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(poll_s)


def burst_runs(instance, keys: set[str]) -> list:
    import dagster as dg

    # Asked by the burst's partitions: a home with a history holds 100,000s of runs the sensor launched.
    records = instance.get_run_records(dg.RunsFilter(tags={"variant_pipeline/launched_by": "outbox_sensor",
                                                           "dagster/partition": sorted(keys)}))
    return [r for r in records if r.dagster_run.tags.get("dagster/partition") in keys]


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, its live descendants and its reaped children (a server's backends)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            continue
    return total


def dagster_db_counters(url: str) -> tuple[int, int]:
    """(committed transactions, rows inserted) in Dagster's database so far."""
    from variant_pipeline.data import audit
    from variant_pipeline.data.engine import make_engine

    engine = make_engine(url, pool=False)
    try:
        with engine.connect() as conn:
            return audit.database_activity(conn)
    finally:
        engine.dispose()


def daemon_burst(environment, engine, instance, burst_jobs: int, profile: Path | None) -> dict[str, Any]:
    from variant_pipeline.data import audit
    from variant_pipeline.services import start_services

    services = start_services(environment, webserver_port=None, log=log)
    spy = None
    try:
        # The sensor is idle (cursor at the end) once its first tick is recorded.
        wait_until(lambda: (s := outbox_state(instance)) is not None and s.instigator_data is not None
                   and s.instigator_data.last_tick_success_timestamp is not None, 180, "the first sensor tick")
        time.sleep(3)
        if profile is not None:
            spy = subprocess.Popen(["/tmp/growth-py-spy" if Path("/tmp/growth-py-spy").exists() else "py-spy",
                                    "record", "--subprocesses", "--format", "raw", "--rate", "50",
                                    "-o", str(profile), "--pid", str(services.processes["daemon"].pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2)
        from variant_pipeline.data.embedded_pg import embedded_server_state

        pg_pid = embedded_server_state(environment.settings.home / "pgdata").pid
        daemon_pid = services.processes["daemon"].pid
        cpu0 = (cpu_seconds(daemon_pid), cpu_seconds(pg_pid), time.monotonic())
        counters0 = dagster_db_counters(environment.dagster_url)
        variants, jobs = submit_batch(engine, burst_jobs, "bench:burst")
        with engine.connect() as conn:
            committed = audit.last_event_time_of_jobs(conn, jobs)
        keys = set(variants) | set(jobs)
        expected = len(variants)  # one run per variant; the jobs wait for their variants
        wait_until(lambda: len(burst_runs(instance, keys)) >= expected, 900, f"{expected} burst runs", poll_s=0.5)
        cpu1 = (cpu_seconds(daemon_pid), cpu_seconds(pg_pid), time.monotonic())
        counters1 = dagster_db_counters(environment.dagster_url)
        time.sleep(6)  # a second run for a variant would show up within a tick
        records = burst_runs(instance, keys)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        services.stop()
    created = sorted(r.create_timestamp.timestamp() for r in records)
    per_variant = collections.Counter(r.dagster_run.tags.get("dagster/partition") for r in records)
    ticks = collections.Counter(r.dagster_run.tags.get("dagster/tick") for r in records)
    return {
        "runs": len(records), "variants": len(variants), "max_runs_per_variant": max(per_variant.values()),
        "first_run_s": created[0] - committed, "last_run_s": created[-1] - committed,
        "runs_per_s": len(created) / max(created[-1] - created[0], 1e-9), "ticks": len(ticks),
        # Load-independent cost: CPU seconds of the daemon with its code server, and of PostgreSQL,
        # from the commit until every run existed; transactions and rows in Dagster's database.
        "cpu_daemon_s": cpu1[0] - cpu0[0], "cpu_postgres_s": cpu1[1] - cpu0[1], "wall_s": cpu1[2] - cpu0[2],
        "dagster_db_transactions": counters1[0] - counters0[0], "dagster_db_rows_inserted": counters1[1] - counters0[1],
        "load_1m_after": os.getloadavg()[0],
        "sample_job": jobs[0],
    }


# Where a sampled stack is, by the first of these frames (outermost first) it contains.
PHASES = [
    ("sensor evaluation (code server)", "evaluate_sensor"),
    ("job subset snapshot (code server)", "get_external_pipeline_subset_result"),
    ("execution plan (code server)", "get_external_execution_plan_snapshot"),
    ("partition checks and adds (daemon)", "_handle_dynamic_partitions_requests"),
    ("run-key lookups (daemon)", "fetch_existing_runs"),
    ("job subset: gRPC wait (daemon)", "_get_subset_remote_job_result"),
    ("execution plan: gRPC wait (daemon)", "CodeLocation.get_execution_plan"),
    ("create_run: run, tags, snapshots (daemon)", "create_run"),
    ("submit_run: enqueue (daemon)", "submit_run"),
    ("sensor evaluation: gRPC wait (daemon)", "_evaluate_sensor"),
]
_IDLE_LEAVES = ("wait (threading", "select (", "_recv", "recv (", "sleep", "poll (", "epoll", "accept (")


def summarize_profile(path: Path) -> dict[str, float]:
    """Busy samples (the leaf frame is not a wait) per phase, as shares of all busy samples."""
    phases: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        if any(frames[-1].startswith(idle) or idle in frames[-1] for idle in _IDLE_LEAVES):
            continue
        total += int(count)
        phase = next((name for name, marker in PHASES if any(marker in f for f in frames)), "other")
        phases[phase] += int(count)
    return {name: n / total for name, n in phases.most_common()} if total else {}


# --- 4-6. Commands and the UI --------------------------------------------------------------------


def timed_cli(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "variant_pipeline.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True)
    return {"command": " ".join(args), "s": time.perf_counter() - t0, "rc": proc.returncode,
            "tail": (proc.stdout + proc.stderr).strip().splitlines()[-3:]}


def has_command(name: str) -> bool:
    from variant_pipeline.cli import build_parser

    try:
        build_parser().parse_args([name, "--help"])
    except SystemExit as exc:
        return exc.code == 0
    return True


# --- Main ----------------------------------------------------------------------------------------


def scrape_times(repeats: int = 6) -> dict[str, Any]:
    """`variant-pipeline metrics` scrapes of the filled home (in process: the scrape, not Python's
    start-up), with the burst's runs still queued in Dagster."""
    import statistics

    from variant_pipeline.config import load_settings
    from variant_pipeline.ops.metrics import build_collector, exposition

    collector = build_collector(load_settings())
    times, text = [], ""
    for _ in range(repeats):
        started = time.perf_counter()
        text = exposition(collector)
        times.append(time.perf_counter() - started)
    return {"first_s": round(times[0], 3), "median_s": round(statistics.median(times[1:]), 3),
            "max_s": round(max(times), 3), "samples": sum(1 for line in text.splitlines()
                                                          if line and not line.startswith("#"))}


def machine() -> dict[str, Any]:
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem_kb / 2**20, 1),
            "load_1m_at_start": os.getloadavg()[0], "python": platform.python_version()}


def close_home(home: Path, keep: bool) -> None:
    """Stop the home's embedded PostgreSQL; remove the home unless it is kept."""
    from variant_pipeline.data.embedded_pg import stop_embedded_server
    from variant_pipeline.data.engine import dispose_engines

    dispose_engines()
    stop_embedded_server(home / "pgdata")
    if not keep:
        shutil.rmtree(home, ignore_errors=True)


def report(figures: dict[str, Any], path: Path | None) -> None:
    text = json.dumps(figures, indent=2, default=str)
    if path:
        path.write_text(text)
    print(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", type=int, default=100_000, help="variant partitions to fill (0: none)")
    p.add_argument("--events", type=int, default=1_000_000, help="outbox events to reach while filling")
    p.add_argument("--batch", type=int, default=1000, help="jobs per submission transaction while filling")
    p.add_argument("--burst-jobs", type=int, default=100, help="jobs (x3 variants) in the burst transaction")
    p.add_argument("--execute", action="store_true", help="let the burst's runs execute (default: they stay queued)")
    p.add_argument("--no-pool", action="store_true",
                   help="Dagster's stock PostgreSQL storage (a connection per query) instead of the pooled one")
    p.add_argument("--profile", type=Path, help="py-spy the daemon during the burst into this file (raw stacks)")
    p.add_argument("--models", type=Path, help="an existing tiny model bundle (default: build one in the home)")
    p.add_argument("--home", type=Path, help="the home to fill (default: a temporary one, removed afterwards)")
    p.add_argument("--filled", action="store_true", help="--home was filled by an earlier run: measure only")
    p.add_argument("--json", type=Path, help="write the figures here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = args.home or Path(tempfile.mkdtemp(prefix="vp-cap-"))
    os.environ["VARIANT_PIPELINE_HOME"] = str(home)
    for name in ("DATABASE_URL", "DAGSTER_DATABASE_URL", "VP_DAGSTER_STORAGE_URL", "DAGSTER_HOME"):
        os.environ.pop(name, None)
    if args.models:
        os.environ["VP_MODELS_DIR"] = str(args.models.resolve())
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.data.jobs import add_tenant
    from variant_pipeline.deployment import DAGSTER_YAML
    from variant_pipeline.services import prepare_environment

    figures: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        environment = prepare_environment(log=log)
        yaml_text = DAGSTER_YAML.read_text()
        if not args.execute:  # runs are created and stay queued: run creation measured alone
            yaml_text = yaml_text.replace("max_concurrent_runs: 4", "max_concurrent_runs: 0")
        if args.no_pool:
            yaml_text = yaml_text.replace(POOLED_STORAGE, STOCK_STORAGE)
        (environment.dagster_home / "dagster.yaml").write_text(yaml_text)
        engine = get_engine(environment.app_url)
        add_tenant(engine, TENANT)
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            # One short daemon start creates the sensor's state (its first tick finds nothing).
            from variant_pipeline.services import start_services

            if not args.filled:
                services = start_services(environment, webserver_port=None, log=log)
                try:
                    wait_until(lambda: outbox_state(instance) is not None, 180, "the outbox sensor's state")
                finally:
                    services.stop()
            if args.variants and not args.filled:
                figures["fill"] = fill(engine, instance, args.variants, args.events, args.batch)
            elif args.filled:
                figures["fill"] = filled_home(engine, instance)
            cursor = move_cursor_to_end(engine, instance)

            variants, jobs = submit_batch(engine, args.burst_jobs, "bench:evaluate")
            figures["sensor_evaluation"] = evaluate_sensor(instance, cursor)
            log(f"sensor evaluation in process: {figures['sensor_evaluation']}")
            move_cursor_to_end(engine, instance)  # that burst was only evaluated, never launched

            figures["daemon_burst"] = daemon_burst(environment, engine, instance, args.burst_jobs, args.profile)
            log(f"daemon burst: {figures['daemon_burst']}")
            if args.profile is not None and args.profile.exists():
                figures["profile"] = summarize_profile(args.profile)
                for phase, share in figures["profile"].items():
                    log(f"  {share:6.1%}  {phase}")

            figures["metrics_scrape"] = scrape_times()
            log(f"metrics scrape: {figures['metrics_scrape']}")

        job = (figures.get("fill") or {}).get("sample_job") or figures["daemon_burst"]["sample_job"]
        commands = [["status", job]] + ([["results", job]] if has_command("results") else [])
        if args.variants or args.filled:
            commands.append(["prune", "--older-than", "1s", "--dry-run"])
        figures["commands"] = [timed_cli(c, environment.env) for c in commands]
        for c in figures["commands"]:
            log(f"{c['command'][:60]}: {c['s']:.2f} s (rc {c['rc']})")
    finally:
        close_home(home, keep=args.home is not None)
    report(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
