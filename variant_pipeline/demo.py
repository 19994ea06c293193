"""``variant-pipeline demo``: the whole pipeline on a sample job, watched in the Dagster UI."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from variant_pipeline.services import (
    prepare_environment,
    start_services,
    submit_sample_job,
    wait_for_job,
    wait_for_runs_to_settle,
)


def _summary(app_url: str, job_id: str, assets_dir: Path) -> list[str]:
    from variant_pipeline.data.engine import get_engine

    lines = []
    with get_engine(app_url).connect() as conn:
        rows = conn.execute(
            sa.text(
                """SELECT v.creation_order, a.path,
                          (SELECT metrics ->> 'ocr_accuracy' FROM evaluations e
                            WHERE e.job_variants_id = v.job_variants_id AND evaluation_type = 'ocr') AS ocr,
                          (SELECT metrics ->> 'contrast_ratio' FROM evaluations e
                            WHERE e.job_variants_id = v.job_variants_id AND evaluation_type = 'readability') AS contrast,
                          (SELECT metrics ->> 'max_iou_text' FROM evaluations e
                            WHERE e.job_variants_id = v.job_variants_id AND evaluation_type = 'iou') AS iou
                     FROM jobs_variants v LEFT JOIN image_assets a ON a.image_asset_id = v.overlaid_img_asset_id
                    WHERE v.job_id = :j ORDER BY v.creation_order"""
            ),
            {"j": job_id},
        ).all()
        feed = conn.execute(
            sa.text("SELECT instagram_ad_copy, hashtags FROM instagram_feeds WHERE job_id = :j"), {"j": job_id}
        ).first()
    for r in rows:
        def fmt(value: str | None, digits: int = 2) -> str:
            return "-" if value is None else f"{float(value):.{digits}f}"

        lines.append(
            f"  variant {r.creation_order}: OCR accuracy {fmt(r.ocr)}, contrast {fmt(r.contrast)}:1, "
            f"text/forbidden IoU {fmt(r.iou, 3)}, image {assets_dir / r.path if r.path else '-'}"
        )
    if feed:
        lines.append(f"  instagram feed: {feed.instagram_ad_copy[:200]!r}")
        lines.append(f"  hashtags: {' '.join(feed.hashtags)}")
    return lines


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=3000, help="Dagster UI port on 127.0.0.1 (default 3000)")
    parser.add_argument("--variants", type=int, default=3, help="variants in the sample job (default 3)")
    parser.add_argument("--exit-when-done", action="store_true", help="stop everything once the job has finished")


def run_demo(args: argparse.Namespace) -> int:
    env = prepare_environment()
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
        print(f"job {job.job_id} ended at ({status.step}, {status.status}) after {elapsed:.0f} s")
        for line in _summary(env.app_url, str(job.job_id), env.settings.assets_dir):
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
        if env.embedded:
            from variant_pipeline.data.embedded_pg import stop_embedded_server

            stop_embedded_server()
