#!/usr/bin/env python
"""A power cut, measured (a benchmark, not a test): the daemon's whole process group and the
PostgreSQL postmaster SIGKILLed together while a model stage runs, then both started again.

In a throw-away home with the default recovery settings: ``--jobs`` jobs of 3 variants are
submitted; once one of them is inside a model stage (``vlm_analyze`` by default), the daemon's
process group (its code server and run workers with it) and the postmaster get SIGKILL in the same
instant; after ``--down`` seconds PostgreSQL and the daemon are started again. Reported: seconds
from the restart until every job has ended, the same jobs without the crash (``--baseline``, run
first in its own home), and whether any (partition, stage) was committed twice.

    .venv/bin/python scripts/power_cut.py --jobs 3 --baseline --json power-cut.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from variant_pipeline.config import apply_offline_defaults  # noqa: E402

apply_offline_defaults()  # the model libraries' offline switches, before any of them is imported
from variant_pipeline.data import audit  # noqa: E402
from variant_pipeline.data.engine import Engine  # noqa: E402

T = TypeVar("T")


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def _read(engine: Engine, query: Callable[..., T], *args: Any) -> T:
    """One of ``data.audit``'s reads, on a connection of its own."""
    with engine.connect() as conn:
        return query(conn, *args)


def _wait(predicate, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def _all_ended(engine: Engine, job_ids: list[str]) -> bool:
    from variant_pipeline import stages as stage_graph

    return _read(engine, audit.ended_job_count, job_ids, stage_graph.LAST_JOB_STAGE) == len(job_ids)


def one_run(jobs: int, crash: bool, stage: str, down_s: float) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="vp-powercut-"))
    os.environ["VARIANT_PIPELINE_HOME"] = str(home)
    for name in ("DATABASE_URL", "DAGSTER_DATABASE_URL", "VP_DAGSTER_STORAGE_URL", "DAGSTER_HOME"):
        os.environ.pop(name, None)
    from variant_pipeline.data.embedded_pg import embedded_server_state, stop_embedded_server
    from variant_pipeline.data.engine import dispose_engines, get_engine
    from variant_pipeline.services import prepare_environment, start_services, submit_sample_job

    figures: dict[str, Any] = {"crash": crash, "jobs": jobs}
    services = None
    try:
        environment = prepare_environment(log=lambda _m: None)
        engine = get_engine(environment.app_url)
        services = start_services(environment, webserver_port=None, log=lambda _m: None)
        submitted = time.monotonic()
        job_ids = [str(submit_sample_job(environment.app_url).job_id) for _ in range(jobs)]
        if crash:
            _wait(lambda: _read(engine, audit.running_attempt_count_at, stage) > 0, 600, f"a variant inside {stage}")
            running = _read(engine, audit.running_attempt_count)
            postmaster = embedded_server_state().pid
            daemon = services.processes["daemon"].pid
            os.killpg(daemon, signal.SIGKILL)
            os.kill(postmaster, signal.SIGKILL)
            log(f"power cut: daemon group {daemon} and postmaster {postmaster} SIGKILLed with {running} "
                f"stage(s) running")
            services.processes["daemon"].wait()
            services.processes.clear()
            dispose_engines()
            time.sleep(down_s)
            # Started again as `variant-pipeline db start` would: a fresh process that finds it down.
            subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from variant_pipeline."
                            "data.embedded_pg import ensure_embedded_server; ensure_embedded_server(Path(sys.argv[1]))",
                            str(home / "pgdata")], cwd=REPO, env=environment.env, check=True, timeout=180)
            restarted = time.monotonic()
            services = start_services(environment, webserver_port=None, log=lambda _m: None)
            engine = get_engine(environment.app_url)
            figures["killed_stages_running"] = running
            _wait(lambda: _all_ended(engine, job_ids), 1800, "every job to end")
            figures["done_after_restart_s"] = round(time.monotonic() - restarted, 1)
        else:
            _wait(lambda: _all_ended(engine, job_ids), 1800, "every job to end")
        figures["done_after_submit_s"] = round(time.monotonic() - submitted, 1)
        figures["jobs_done"] = _read(engine, audit.done_job_count, job_ids)
        figures["committed_twice"] = _read(engine, audit.stages_committed_twice)
        figures["attempts"] = _read(engine, audit.attempt_outcome_counts)
        return figures
    finally:
        if services is not None:
            services.stop()
        dispose_engines()
        stop_embedded_server(home / "pgdata")
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=3, help="jobs of 3 variants (default 3)")
    p.add_argument("--stage", default="vlm_analyze", help="the model stage to cut power in (default vlm_analyze)")
    p.add_argument("--down", type=float, default=5.0, help="seconds before both start again (default 5)")
    p.add_argument("--baseline", action="store_true", help="first the same jobs without the crash")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    figures: dict[str, Any] = {"load_before": os.getloadavg()}
    if args.baseline:
        figures["baseline"] = one_run(args.jobs, False, args.stage, args.down)
        log(f"baseline: {figures['baseline']}")
    figures["power_cut"] = one_run(args.jobs, True, args.stage, args.down)
    log(f"power cut: {figures['power_cut']}")
    figures["load_after"] = os.getloadavg()
    text = json.dumps(figures, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0 if figures["power_cut"]["committed_twice"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
