#!/usr/bin/env python
"""Dagster's own floor for a burst of runs (a benchmark, not a test).

How long does the Dagster daemon alone take to create N runs that one sensor tick asks for, with
none of this project's code in the way? ``scripts/dagster_floor_defs.py`` is a bare code location
(a chain of no-op assets on a dynamic partitions definition, one sensor); this script gives it the
project's ``dagster.yaml`` (pooled PostgreSQL storage, queued runs that never start, so run
creation is measured alone) on a fresh embedded PostgreSQL, starts the real daemon, triggers one
burst per configuration and reports, per configuration, the seconds from the trigger to the first
and the last run, and the CPU seconds the daemon (with its code server) and PostgreSQL spent.

    .venv/bin/python scripts/bench_dagster_floor.py --runs 300 --json floor.json

Compare with ``scripts/bench_capacity.py --variants 0 --events 0`` (the pipeline's own burst):
see docs/capacity.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

# bench_capacity imports variant_pipeline first (its offline switches)
from bench_capacity import cpu_seconds, dagster_db_counters, log, wait_until  # noqa: E402

# (label, assets per run, explicit asset selection on each run request)
CONFIGURATIONS = [
    ("1 asset, no selection", 1, False),
    ("9 assets, no selection", 9, False),
    ("9 assets, explicit selection (as the pipeline's runs)", 9, True),
]


def burst(instance, env: dict[str, str], home: Path, assets: int, selection: bool, runs: int) -> dict[str, Any]:
    import dagster as dg

    trigger = home / f"trigger-{assets}"
    workspace = home / f"workspace-{assets}.yaml"
    workspace.write_text(f"load_from:\n  - python_file:\n      relative_path: {ROOT / 'scripts' / 'dagster_floor_defs.py'}\n"
                         f"      location_name: floor_{assets}\n")
    env = {**env, "FLOOR_ASSETS": str(assets), "FLOOR_TRIGGER": str(trigger)}
    log_file = (home / f"daemon-{assets}.log").open("w")
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
                              cwd=home, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        def ticked() -> bool:
            states = [s for s in instance.all_instigator_state() if s.instigator_name == "floor_sensor"
                      and s.origin.repository_origin.code_location_origin.location_name == f"floor_{assets}"]
            return bool(states) and states[0].instigator_data is not None \
                and states[0].instigator_data.last_tick_success_timestamp is not None

        wait_until(ticked, 180, "the floor sensor's first tick")
        time.sleep(3)
        batch = f"a{assets}-{'sel' if selection else 'all'}-{time.time_ns()}"
        cpu0 = (cpu_seconds(daemon.pid), cpu_seconds(_postgres_pid(home)))
        db0 = dagster_db_counters(env["VP_DAGSTER_STORAGE_URL"])
        started = time.time()
        trigger.write_text(json.dumps({"batch": batch, "runs": runs, "selection": selection}))
        runs_filter = dg.RunsFilter(tags={"floor/batch": batch})
        wait_until(lambda: instance.get_runs_count(runs_filter) >= runs, 900, f"{runs} runs", poll_s=0.5)
        cpu1 = (cpu_seconds(daemon.pid), cpu_seconds(_postgres_pid(home)))
        db1 = dagster_db_counters(env["VP_DAGSTER_STORAGE_URL"])
        created = sorted(r.create_timestamp.timestamp() for r in instance.get_run_records(runs_filter))
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log_file.close()
    figures = {
        "assets": assets, "selection": selection, "runs": len(created),
        "first_run_s": round(created[0] - started, 2), "last_run_s": round(created[-1] - started, 2),
        "cpu_daemon_s": round(cpu1[0] - cpu0[0], 2), "cpu_postgres_s": round(cpu1[1] - cpu0[1], 2),
        "cpu_daemon_per_run_s": round((cpu1[0] - cpu0[0]) / len(created), 4),
        "dagster_db_transactions": db1[0] - db0[0], "dagster_db_rows_inserted": db1[1] - db0[1],
        "load_1m_after": round(os.getloadavg()[0], 2),
    }
    log(f"{assets} asset(s), selection {selection}: {figures}")
    return figures


def _postgres_pid(home: Path) -> int:
    from variant_pipeline.data.embedded_pg import embedded_server_state

    return embedded_server_state(home / "pgdata").pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="runs asked for in the one tick (default 300)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="vp-floor-"))
    os.environ["VARIANT_PIPELINE_HOME"] = str(home)
    for name in ("DATABASE_URL", "DAGSTER_DATABASE_URL", "VP_DAGSTER_STORAGE_URL", "DAGSTER_HOME"):
        os.environ.pop(name, None)
    from variant_pipeline.data.embedded_pg import stop_embedded_server
    from variant_pipeline.deployment import DAGSTER_YAML
    from variant_pipeline.services import prepare_environment

    results = []
    try:
        environment = prepare_environment(log=lambda _m: None)
        # Runs are created and stay queued: run creation is measured alone, as in bench_capacity.
        (environment.dagster_home / "dagster.yaml").write_text(
            DAGSTER_YAML.read_text().replace("max_concurrent_runs: 4", "max_concurrent_runs: 0"))
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            for _label, assets, selection in CONFIGURATIONS:
                results.append(burst(instance, environment.env, home, assets, selection, args.runs))
    finally:
        stop_embedded_server(home / "pgdata")
        shutil.rmtree(home, ignore_errors=True)
    print("| configuration | first run (s) | last run (s) | daemon CPU-s per run | PostgreSQL CPU (s) |")
    print("|---|---|---|---|---|")
    for (label, _a, _s), r in zip(CONFIGURATIONS, results, strict=True):
        print(f"| {label} | {r['first_run_s']} | {r['last_run_s']} | {r['cpu_daemon_per_run_s']} | {r['cpu_postgres_s']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
