"""``variant-pipeline demo``: the whole pipeline on a sample job, watched in the Dagster UI."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from variant_pipeline.services import (
    prepare_environment,
    start_services,
    submit_sample_job,
    wait_for_job,
    wait_for_runs_to_settle,
)


def _summary(app_url: str, job_id: str, settings) -> list[str]:
    """Each variant's image, scores and checks, and the job's copy: the results contract, shortly."""
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.data.results import job_results

    results = job_results(get_engine(app_url), job_id, settings)

    def fmt(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{float(value):.{digits}f}"

    lines = []
    for v in results.variants:
        s = v.scores
        passed = sum(c.outcome == "passed" for c in v.checks)
        lines.append(
            f"  variant {v.creation_order}: {v.state}, OCR accuracy {fmt(s['ocr_accuracy'])}, contrast "
            f"{fmt(s['contrast_ratio'])}:1, text/forbidden IoU {fmt(s['max_iou_text'], 3)}, checks passed "
            f"{passed}/{len(v.checks)}, image {v.image_path or '-'}" + (f", error: {v.error}" if v.error else "")
        )
    if results.instagram_copy is not None:
        lines.append(f"  instagram feed: {results.instagram_copy[:200]!r}")
        lines.append(f"  hashtags: {' '.join(results.hashtags)}")
    note = tiny_models_note(settings)
    if note:
        lines.append(f"  ({note})")
    lines.append(f"  all of it: variant-pipeline results {job_id} [--json] [--html gallery.html]")
    return lines


def tiny_models_note(settings) -> str | None:
    """What the summary must say when it shows the tiny random-weight models' output."""
    from variant_pipeline.models.registry import tiny_settings_in_use

    tiny = tiny_settings_in_use(settings)
    if not tiny:
        return None
    what = "the copy and hashtags are noise" if "text_model" in tiny else "the images and verdicts are noise"
    names = ", ".join(f"VP_{name.upper()}" for name in tiny)
    return (f"{what}: {names} still point at the tiny random-weight bundle; set them to real weights "
            "(a local path or a hub id, README: Configuration)")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=3000, help="Dagster UI port on 127.0.0.1 (default 3000)")
    parser.add_argument("--variants", type=int, default=3, help="variants in the sample job (default 3)")
    parser.add_argument("--exit-when-done", action="store_true", help="stop everything once the job has finished")
    parser.add_argument("--backend", choices=("local", "ray"), default=None,
                        help="where the models run: in each run (local) or in Ray Serve replicas shared by "
                             "every run (ray); default: VP_MODEL_BACKEND, else local")
    parser.add_argument("--ray-port", type=int, default=6390,
                        help="GCS port of the local Ray head with --backend ray (default 6390; never 6379)")


def check_demo_arguments(args: argparse.Namespace) -> None:
    """Refuse what would fail only after the services started: a bad variant count or port."""
    import socket

    from variant_pipeline.validation import InputError, check_variant_count

    check_variant_count(args.variants)
    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be between 1 and 65535, got {args.port}")
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", args.port))
        except OSError as exc:
            raise InputError(f"port {args.port} on 127.0.0.1 is not free ({exc.strerror})") from None


def run_demo(args: argparse.Namespace) -> int:
    check_demo_arguments(args)
    if args.backend:
        os.environ["VP_MODEL_BACKEND"] = args.backend  # the daemon and its run workers inherit it
    env = prepare_environment()
    ray_started = False
    if env.settings.model_backend == "ray":
        from variant_pipeline.models.serving import start_and_deploy

        address, ray_started = start_and_deploy(env.settings, args.ray_port)
        os.environ["RAY_ADDRESS"] = env.env["RAY_ADDRESS"] = address
    services = start_services(env, webserver_port=args.port)

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored, so Ctrl-C/kill -INT would
    # otherwise do nothing when the demo runs with '&'.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    try:
        job = submit_sample_job(env.app_url, variants=args.variants)
        print(f"submitted job {job.job_id} with {len(job.variant_ids)} variants; following its progress:")
        status = wait_for_job(env.app_url, job.job_id)
        elapsed = time.monotonic() - started
        print(f"job {job.job_id} ended at ({status.stage}, {status.status}) after {elapsed:.0f} s")
        for line in _summary(env.app_url, str(job.job_id), env.settings):
            print(line)
        base = f"http://127.0.0.1:{args.port}"
        print("\nIn the Dagster UI:")
        print(f"  lineage:        {base}/asset-groups")
        print(f"  one partition:  {base}/assets/overlay?view=partitions&partition={job.variant_ids[0]}")
        print(f"  runs:           {base}/runs")
        print(f"  sensors:        {base}/automation")
        print(f"  job status:     variant-pipeline status {job.job_id}")
        if args.exit_when_done:
            left = wait_for_runs_to_settle()
            if left:
                print(f"{left} Dagster runs were still in flight when the demo stopped", file=sys.stderr)
            return 0 if status.status == "done" else 1
        print("\nServing until interrupted (Ctrl-C).")
        while True:
            for name, proc in services.processes.items():
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; see {services.logs[name]}", file=sys.stderr)
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping: daemon, web server" + (", embedded PostgreSQL" if env.embedded else ""))
        return 0
    finally:
        services.stop()
        from variant_pipeline.data.engine import dispose_engines

        dispose_engines()
        if ray_started:
            from variant_pipeline.models.ray_head import stop_head

            stop_head(env.settings)
        if env.embedded:
            from variant_pipeline.data.embedded_pg import stop_embedded_server

            stop_embedded_server()
