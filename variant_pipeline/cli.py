"""The ``variant-pipeline`` command line.

Each subcommand is one ``_add_<name>(subparsers)`` function that registers its parser and
handler (``set_defaults(handler=...)``); add it to ``COMMANDS`` to make it available. Handlers
take the parsed arguments and return an exit code. Expected failures (bad input, unknown ids, an
unreachable database) print one ``error: ...`` line on stderr and exit 2, having written nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import NoReturn

EXIT_OK = 0
EXIT_USAGE = 2


class CliError(Exception):
    """A failure to report as one line (exit 2)."""


# --- db ---------------------------------------------------------------------------------------


def _add_db(sub: argparse._SubParsersAction) -> None:
    db_parser = sub.add_parser("db", help="database: migrations, embedded server")
    db_sub = db_parser.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    db_sub.add_parser("upgrade", help="apply pending migrations and sync the stage table").set_defaults(
        handler=_db_upgrade
    )
    db_sub.add_parser("status", help="server, URL, applied and pending migrations").set_defaults(handler=_db_status)
    db_sub.add_parser("start", help="start the embedded PostgreSQL (no-op with DATABASE_URL)").set_defaults(
        handler=_db_start
    )
    db_sub.add_parser("stop", help="stop the embedded PostgreSQL").set_defaults(handler=_db_stop)
    url = db_sub.add_parser("url", help="print the database URL")
    url.add_argument("--dagster", action="store_true", help="the URL of Dagster's storage database instead")
    url.set_defaults(handler=_db_url)


def _db_upgrade(args: argparse.Namespace) -> int:
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.data.migrations import upgrade

    engine = get_engine()
    applied = upgrade(engine)
    if applied:
        for migration in applied:
            print(f"applied {migration.path.name}")
    else:
        print("database is up to date")
    return EXIT_OK


def _db_status(args: argparse.Namespace) -> int:
    from variant_pipeline.data.embedded_pg import embedded_server_state
    from variant_pipeline.data.engine import app_database_url, get_engine, redact, uses_embedded_server
    from variant_pipeline.data.migrations import migration_status

    if uses_embedded_server():
        state = embedded_server_state()
        print(f"server: embedded PostgreSQL, data {state.pgdata}, "
              f"{'running (pid ' + str(state.pid) + ')' if state.running else 'stopped'}")
    else:
        print("server: DATABASE_URL")
    url = app_database_url()
    print(f"url: {redact(url)}")
    status = migration_status(get_engine(url))
    for applied in status.applied:
        print(f"applied {applied.version}_{applied.name} at {applied.applied_at:%Y-%m-%d %H:%M:%S%z}")
    for pending in status.pending:
        print(f"pending {pending.path.name}")
    for changed in status.changed:
        print(f"CHANGED after it was applied: {changed}")
    if not status.pending and not status.changed:
        print("schema: up to date")
    return EXIT_OK if not status.changed else EXIT_USAGE


def _db_start(args: argparse.Namespace) -> int:
    from variant_pipeline.data.engine import (
        app_database_url,
        dagster_database_url,
        redact,
        uses_embedded_server,
    )

    if not uses_embedded_server():
        print("DATABASE_URL is set: nothing to start")
        return EXIT_OK
    url = app_database_url()
    dagster_database_url()
    print(f"embedded PostgreSQL running: {redact(url)}")
    return EXIT_OK


def _db_stop(args: argparse.Namespace) -> int:
    from variant_pipeline.data.embedded_pg import stop_embedded_server
    from variant_pipeline.data.engine import dispose_engines, uses_embedded_server

    if not uses_embedded_server():
        print("DATABASE_URL is set: nothing to stop")
        return EXIT_OK
    dispose_engines()
    print("embedded PostgreSQL stopped" if stop_embedded_server() else "embedded PostgreSQL was not running")
    return EXIT_OK


def _db_url(args: argparse.Namespace) -> int:
    from variant_pipeline.data.engine import app_database_url, dagster_database_url

    print(dagster_database_url() if args.dagster else app_database_url())
    return EXIT_OK


# --- tenant -----------------------------------------------------------------------------------


def _add_tenant(sub: argparse._SubParsersAction) -> None:
    tenant = sub.add_parser("tenant", help="tenants (every job belongs to one)")
    tenant_sub = tenant.add_subparsers(dest="tenant_command", metavar="COMMAND", required=True)
    add = tenant_sub.add_parser("add", help="add a tenant (does nothing if it exists)")
    add.add_argument("tenant_id")
    add.add_argument("--name", help="display name")
    add.set_defaults(handler=_tenant_add)


def _tenant_add(args: argparse.Namespace) -> int:
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.data.jobs import add_tenant

    created = add_tenant(get_engine(), args.tenant_id, args.name)
    print(f"tenant {args.tenant_id} {'added' if created else 'already exists'}")
    return EXIT_OK


# --- submit / status --------------------------------------------------------------------------


def _add_submit(sub: argparse._SubParsersAction) -> None:
    from variant_pipeline.validation import DEFAULT_VARIANTS

    submit = sub.add_parser("submit", help="submit an ad job (all rows in one transaction)")
    submit.add_argument("--tenant", required=True, help="tenant id (see `tenant add`)")
    submit.add_argument("--description", required=True, help="Korean product description")
    submit.add_argument("--ad-copy-en", help="English ad copy")
    submit.add_argument("--ad-copy-kor", help="short Korean ad copy drawn on the image")
    submit.add_argument("--image", type=Path, help="product photo")
    submit.add_argument("--prompt", help="image-generation prompt")
    submit.add_argument("--variants", type=int, default=DEFAULT_VARIANTS,
                        help=f"number of variants, 1-16 (default {DEFAULT_VARIANTS})")
    submit.add_argument("--json", action="store_true", help="print the ids as JSON")
    submit.set_defaults(handler=_submit)


def _submit(args: argparse.Namespace) -> int:
    from variant_pipeline.config import load_settings
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.data.jobs import JobRequest, submit_job
    from variant_pipeline.data.storage import AssetStore

    # Validate everything before touching the database or the disk.
    request = JobRequest.build(
        tenant_id=args.tenant,
        description_kor=args.description,
        ad_copy_eng=args.ad_copy_en,
        ad_copy_kor=args.ad_copy_kor,
        prompt=args.prompt,
        image_path=args.image,
        variants=args.variants,
    )
    # Every host that submits must reach the asset store: checked before anything is written.
    store = AssetStore.from_settings(load_settings())
    store.check()
    job = submit_job(get_engine(), request, store if request.image_path else None)
    if args.json:
        print(json.dumps({"job_id": str(job.job_id), "variant_ids": [str(v) for v in job.variant_ids]}))
    else:
        print(f"job {job.job_id}")
        for order, variant_id in enumerate(job.variant_ids, start=1):
            print(f"variant {order} {variant_id}")
    return EXIT_OK


def _add_status(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="a job's state and each variant's stage, status, timings and error")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--attempts", action="store_true",
                        help="also list every attempt of every stage (run, worker, outcome, error)")
    status.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.data.jobs import get_job_status
    from variant_pipeline.data.results import retention_line
    from variant_pipeline.validation import parse_uuid

    job_id = parse_uuid(args.job_id, "job id")  # before connecting: a typo needs no database
    engine = get_engine()
    job = get_job_status(engine, job_id)
    attempts = _attempts_by_partition(engine, job) if args.attempts else {}
    if args.json:
        data = job.to_dict()
        if args.attempts:
            data["attempts"] = {key: [_plain_attempt(a) for a in rows] for key, rows in attempts.items()}
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"job {job.job_id}  tenant {job.tenant_id}  {job.stage}/{job.status}  "
          f"variants {len(job.variants)}/{job.expected_variants}")
    print(f"  created {_ts(job.created_at)}  started {_ts(job.started_at)}  "
          f"finished {_ts(job.finished_at)}  took {_took(job.started_at, job.finished_at)}")
    if job.error:
        print(f"  error: {job.error}")
    pruned = retention_line(_ts(job.partitions_removed_at) if job.partitions_removed_at else None,
                            _ts(job.pruned_at) if job.pruned_at else None)
    if pruned:
        print(f"  {pruned}")
    _print_attempts(attempts.get(str(job.job_id), []))
    for v in job.variants:
        line = (f"  variant {v.creation_order} {v.job_variants_id}  {v.stage}/{v.status}  "
                f"started {_ts(v.started_at)}  finished {_ts(v.finished_at)}  took {_took(v.started_at, v.finished_at)}")
        print(line)
        if v.error:
            print(f"    error: {v.error}")
        _print_attempts(attempts.get(str(v.job_variants_id), []))
    return EXIT_OK


def _attempts_by_partition(engine, job) -> dict[str, list[dict]]:
    from variant_pipeline.data.partition_state import attempts_of

    # For the job id, attempts_of gives the job's own (job-level) attempts only.
    keys = [str(job.job_id)] + [str(v.job_variants_id) for v in job.variants]
    return {key: attempts_of(engine, key) for key in keys}


def _plain_attempt(attempt: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in attempt.items()}


def _print_attempts(attempts: list[dict]) -> None:
    for a in attempts:
        line = (f"      {a['stage']} attempt {a['attempt']}: {a['outcome']}  run {a['run_id'] or '-'}  "
                f"worker {a['worker'] or '-'}  started {_ts(a['started_at'])}  took {_took(a['started_at'], a['finished_at'])}")
        print(line)
        if a["error"]:
            retry = "  (retry scheduled)" if a["will_retry"] else ""
            print(f"        error: {a['error']}{retry}")


def _ts(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _took(start: datetime | None, end: datetime | None) -> str:
    return f"{(end - start).total_seconds():.1f}s" if start and end else "-"


# --- results ----------------------------------------------------------------------------------


def _add_results(sub: argparse._SubParsersAction) -> None:
    results = sub.add_parser(
        "results", help="a job's results: images, scores, check outcomes, Instagram copy, hashtags",
        description="The results of one job: its state, and per variant the final image path, scores and "
        "check outcomes; the Korean ad copy, the Instagram copy and the hashtags. A job still running "
        "answers with its state and what exists so far.",
    )
    results.add_argument("job_id")
    results.add_argument("--json", action="store_true", help="print the results contract as JSON")
    results.add_argument("--html", type=Path, metavar="FILE",
                         help="also write a self-contained HTML gallery (images embedded) to FILE")
    results.set_defaults(handler=_results)


def _results(args: argparse.Namespace) -> int:
    from variant_pipeline.config import load_settings
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.data.results import job_results
    from variant_pipeline.data.storage import AssetStore
    from variant_pipeline.validation import parse_uuid

    job_id = parse_uuid(args.job_id, "job id")
    if args.html is not None and (args.html.is_dir() or not args.html.parent.is_dir()):
        raise CliError(f"cannot write the HTML gallery to {args.html}: not a file in an existing folder")
    settings = load_settings()
    store = AssetStore.from_settings(settings)
    results = job_results(get_engine(), job_id, settings, store)
    if args.html is not None:
        from variant_pipeline.gallery import html_gallery

        try:
            args.html.write_text(html_gallery(results, store), encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write the HTML gallery to {args.html}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(results.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_results(results)
    if args.html is not None and not args.json:
        print(f"gallery written to {args.html}")
    return EXIT_OK


def _print_results(results) -> None:
    from variant_pipeline.data.results import retention_line

    print(f"job {results.job_id}  {results.state} ({results.stage}/{results.status})  "
          f"variants {len(results.variants)}/{results.expected_variants}")
    if results.error:
        print(f"  error: {results.error}")
    pruned = retention_line(results.partitions_removed_at, results.files_removed_at)
    if pruned:
        print(f"  {pruned}")
    for v in results.variants:
        print(f"  variant {v.creation_order} {v.job_variants_id}  {v.state} ({v.stage}/{v.status})")
        if v.error:
            print(f"    error: {v.error}")
        if v.image_path:
            print(f"    image: {v.image_path}")
        scores = "  ".join(f"{k} {_score(val)}" for k, val in v.scores.items() if val is not None)
        if scores:
            print(f"    scores: {scores}")
        for c in v.checks:
            print(f"    check {c.name}: {c.line()}")
    print(f"  Korean ad copy: {results.ad_copy_kor or '-'}")
    print(f"  Instagram copy: {_one_line(results.instagram_copy or '-')}")
    print(f"  hashtags: {' '.join(results.hashtags) or '-'}")


def _score(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


# --- retry ------------------------------------------------------------------------------------


def _add_retry(sub: argparse._SubParsersAction) -> None:
    retry = sub.add_parser(
        "retry", help="run a failed variant or job again (or redo stages with --from), with a fresh attempt budget",
        description="Queue a variant or job again. Without --from: a variant from its failed stage; a job, "
        "its failed variants (each from where it failed) or its failed job stage. With --from STAGE: from "
        "that stage (for a job and a variant stage: all its variants, one that never got that far from where "
        "it stopped). The outbox sensor starts the runs, "
        "and the job's own stages run again when its variants are done. Re-materializing a stage in the "
        "Dagster UI goes through the same claim and attempt bookkeeping.",
    )
    retry.add_argument("target", help="a job_variants_id or a job_id")
    retry.add_argument("--from", dest="from_stage", metavar="STAGE", help="the stage to start from")
    retry.set_defaults(handler=_retry)


def _retry(args: argparse.Namespace) -> int:
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.state.recovery import RetryError, request_retry
    from variant_pipeline.validation import parse_uuid

    target = str(parse_uuid(args.target, "variant or job id"))
    try:
        requests = request_retry(get_engine(), target, args.from_stage)
    except RetryError as exc:
        raise CliError(str(exc)) from None
    for r in requests:
        print(f"{r.level} {r.partition_key}: {r.previous[0]}/{r.previous[1]} -> {r.stage}/queued")
    return EXIT_OK


# --- prune ------------------------------------------------------------------------------------


def _add_prune(sub: argparse._SubParsersAction) -> None:
    prune = sub.add_parser(
        "prune", help="remove what jobs finished long ago leave behind, and keep the partition budget",
        description="With --older-than DURATION, for jobs finished (done or failed) before now - DURATION: "
        "delete their dynamic partitions in Dagster and the Dagster runs of those partitions (with their "
        "event records), their asset files, and with --rows their rows; also delete outbox events older than "
        "the cutoff that the outbox sensor has read, and orphan files no row names (older than the "
        "cutoff and VP_ORPHAN_MIN_AGE_S). Then, while more variant partitions than the partition budget "
        "(--budget, else VP_PARTITION_BUDGET, default 10000) are live, delete the Dagster partitions "
        "and runs (our rows and files stay) of the jobs that finished longest ago. Never touches a queued "
        "or running job; running it again is harmless.",
    )
    prune.add_argument("--older-than", metavar="DURATION", help="e.g. 30d, 12h, 1d12h (units s, m, h, d, w)")
    prune.add_argument("--budget", type=_whole_number, metavar="N",
                       help="live variant partitions to keep (0: no budget); default VP_PARTITION_BUDGET")
    prune.add_argument("--dry-run", action="store_true", help="print what would be removed; change nothing")
    prune.add_argument("--rows", action="store_true",
                       help="also delete the jobs' rows (inputs, variants, outputs, traces, attempts); "
                       "with --older-than only")
    prune.set_defaults(handler=_prune)


def _whole_number(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return int(text)


def _prune(args: argparse.Namespace) -> int:
    from variant_pipeline.config import load_settings
    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.state.retention import prune
    from variant_pipeline.validation import parse_duration

    # Before connecting: a typo needs no database.
    older_than = parse_duration(args.older_than) if args.older_than is not None else None
    if args.rows and older_than is None:
        raise CliError("--rows needs --older-than: the partition budget never deletes rows")
    settings = load_settings()
    budget = settings.partition_budget if args.budget is None else args.budget
    if older_than is None and not budget:
        raise CliError("nothing to prune by: give --older-than DURATION, or a partition budget "
                       "(--budget N or VP_PARTITION_BUDGET above 0)")
    from variant_pipeline.data.storage import AssetStore
    from variant_pipeline.sensors.retention import DagsterOrchestrator, open_instance

    with open_instance() as instance:
        report = prune(get_engine(), DagsterOrchestrator(instance), AssetStore.from_settings(settings), older_than,
                       rows=args.rows, dry_run=args.dry_run, orphan_min_age_s=settings.orphan_min_age_s,
                       partition_budget=budget or None)
    for line in report.lines():
        print(line)
    return EXIT_OK


# --- models -----------------------------------------------------------------------------------


def _add_models(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="model bundles")
    models_sub = models.add_subparsers(dest="models_command", metavar="COMMAND", required=True)
    tiny = models_sub.add_parser("build-tiny", help="build the tiny offline model bundle into DIR")
    tiny.add_argument("dir", type=Path)
    tiny.set_defaults(handler=_models_build_tiny)


def _models_build_tiny(args: argparse.Namespace) -> int:
    from variant_pipeline.models.tiny import build_tiny_bundle

    build_tiny_bundle(Path(args.dir))
    print(f"tiny model bundle written to {args.dir}")
    return EXIT_OK


# --- metrics ----------------------------------------------------------------------------------

DEFAULT_METRICS_PORT = 9464  # the port OpenTelemetry's Prometheus exporter uses by default


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {port}")
    return port


def _add_metrics(sub: argparse._SubParsersAction) -> None:
    metrics = sub.add_parser(
        "metrics", help="serve Prometheus metrics read from the database and Dagster at each scrape")
    metrics.add_argument("--port", type=_port, default=DEFAULT_METRICS_PORT,
                         help=f"port of /metrics (default {DEFAULT_METRICS_PORT})")
    metrics.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    metrics.add_argument("--once", action="store_true", help="print one scrape on stdout and exit")
    metrics.set_defaults(handler=_metrics)


def _metrics(args: argparse.Namespace) -> int:
    import time

    from variant_pipeline.config import load_settings
    from variant_pipeline.ops.metrics import build_collector, exposition, serve

    collector = build_collector(load_settings())
    if args.once:
        sys.stdout.write(exposition(collector))
        return EXIT_OK
    try:
        server = serve(collector, args.host, args.port)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    print(f"serving Prometheus metrics on http://{args.host}:{args.port}/metrics (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        server.shutdown()


# --- doctor -----------------------------------------------------------------------------------


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    from variant_pipeline.ops.doctor import DEFAULT_MIN_FREE_GB

    doctor = sub.add_parser("doctor", help="check that this deployment can work: database, Dagster, models, "
                            "Tesseract, fonts, Ray, disk (exit 0 only when all pass)")
    doctor.add_argument("--json", action="store_true", help="the checks as JSON")
    doctor.add_argument("--min-free-gb", type=_non_negative_float, default=DEFAULT_MIN_FREE_GB,
                        help=f"free disk space wanted under the asset root (default {DEFAULT_MIN_FREE_GB:g})")
    doctor.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from variant_pipeline.config import load_settings
    from variant_pipeline.ops.doctor import run_checks

    checks = run_checks(load_settings(), args.min_free_gb)
    if args.json:
        print(json.dumps({"ok": all(c.ok for c in checks), "checks": [c.to_dict() for c in checks]}, indent=2,
                         ensure_ascii=False))
    else:
        for check in checks:
            print(check.line())
    return EXIT_OK if all(c.ok for c in checks) else 1


# --- serve ------------------------------------------------------------------------------------

DEFAULT_RAY_PORT = 6390  # not 6379: that is Redis's port, and Ray's default


def _add_serve(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="the Ray Serve model layer (VP_MODEL_BACKEND=ray)")
    serve_sub = serve.add_subparsers(dest="serve_command", metavar="COMMAND", required=True)
    start = serve_sub.add_parser(
        "start", help="start a local Ray head on 127.0.0.1 (or use RAY_ADDRESS) and deploy the model families")
    start.add_argument("--port", type=int, default=DEFAULT_RAY_PORT,
                       help=f"GCS port of the local head; it also takes PORT+1 and PORT+2 (default {DEFAULT_RAY_PORT})")
    start.add_argument("--num-cpus", type=int, default=None, help="CPUs the local head offers (default: all)")
    start.set_defaults(handler=_serve_start)
    serve_sub.add_parser("status", help="replicas, loads per replica, queue length, batch-size histogram"
                         ).set_defaults(handler=_serve_status)
    serve_sub.add_parser("stop", help="stop the local head this home started (on RAY_ADDRESS: remove the deployments)"
                         ).set_defaults(handler=_serve_stop)


def _serve_start(args: argparse.Namespace) -> int:
    from variant_pipeline.config import load_settings
    from variant_pipeline.models.ray_head import ModelServerUnavailable
    from variant_pipeline.models.serving import start_and_deploy
    from variant_pipeline.services import ensure_tiny_bundle

    settings = load_settings()
    ensure_tiny_bundle(settings)  # the replicas load the same models a run would
    try:
        start_and_deploy(settings, args.port, args.num_cpus)
    except (ValueError, ModelServerUnavailable) as exc:
        raise CliError(str(exc)) from None
    print("runs use it with VP_MODEL_BACKEND=ray")
    return EXIT_OK


def _connect(settings) -> str:
    from variant_pipeline.models import ray_head

    try:
        return ray_head.connect(settings)
    except ray_head.ModelServerUnavailable as exc:
        raise CliError(str(exc)) from None


def _serve_status(args: argparse.Namespace) -> int:
    from variant_pipeline.config import load_settings
    from variant_pipeline.models.serving import status_lines

    settings = load_settings()
    address = _connect(settings)
    print(f"Ray cluster: {address}")
    for line in status_lines():
        print(line)
    return EXIT_OK


def _serve_stop(args: argparse.Namespace) -> int:
    from variant_pipeline.config import load_settings
    from variant_pipeline.models import ray_head

    settings = load_settings()
    if settings.ray_address:
        _connect(settings)
        from variant_pipeline.models.serving import undeploy

        removed = undeploy()
        print(f"removed {', '.join(removed) or 'no applications'} from {settings.ray_address}; the cluster keeps running")
        return EXIT_OK
    record = ray_head.read_record(settings)
    if record is None:
        print("no local Ray head recorded for this home")
        return EXIT_OK
    ended = ray_head.stop_head(settings)
    print(f"stopped the Ray head on {record.address}: {ended} processes ended")
    return EXIT_OK


# --- demo -------------------------------------------------------------------------------------


def _add_demo(sub: argparse._SubParsersAction) -> None:
    from variant_pipeline.demo import add_demo_arguments

    demo = sub.add_parser(
        "demo", help="start the database, Dagster daemon and UI, run a sample job end to end, keep serving"
    )
    add_demo_arguments(demo)
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from variant_pipeline.demo import run_demo

    return run_demo(args)


# --- wiring -----------------------------------------------------------------------------------

# One function per top-level subcommand; adding a subcommand means adding its function here.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_db,
    _add_tenant,
    _add_submit,
    _add_status,
    _add_results,
    _add_retry,
    _add_prune,
    _add_models,
    _add_metrics,
    _add_doctor,
    _add_serve,
    _add_demo,
]


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error format: one line, exit 2 (its subcommand parsers inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {self.prog}: {_one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="variant-pipeline",
        description="Dagster-orchestrated ad-image pipeline over PostgreSQL.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


# Commands whose point is a server that keeps running: the URL printed is for other processes.
_KEEPS_EMBEDDED_SERVER = {("db", "start"), ("db", "url"), ("demo", None)}


@contextmanager
def _embedded_server_kept_as_found(args: argparse.Namespace) -> Iterator[None]:
    """Stop the embedded PostgreSQL afterwards if this command started it (``results`` after the
    demo ended must not leave a server running behind the user's back)."""
    from variant_pipeline.data.embedded_pg import embedded_server_state, stop_embedded_server
    from variant_pipeline.data.engine import dispose_engines, uses_embedded_server

    command = (args.command, getattr(args, "db_command", None))
    watch = uses_embedded_server() and command not in _KEEPS_EMBEDDED_SERVER
    was_running = embedded_server_state().running if watch else True
    try:
        yield
    finally:
        if not was_running and embedded_server_state().running:
            dispose_engines()
            stop_embedded_server()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Sequence[str] | None = None) -> int:
    from variant_pipeline.config import SettingsError, apply_offline_defaults

    # Before anything imports a model library (build-tiny, serve, demo) or Dagster (its telemetry).
    apply_offline_defaults()
    from variant_pipeline.data.embedded_pg import EmbeddedServerError
    from variant_pipeline.data.engine import ConnectionLost, SchemaMissing, normalize_database_url, redact
    from variant_pipeline.data.migrations import MigrationError
    from variant_pipeline.data.storage import StorageError
    from variant_pipeline.validation import InputError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its message
        return int(exc.code or 0)
    try:
        with _embedded_server_kept_as_found(args):
            return int(args.handler(args))
    except BrokenPipeError:  # the reader went away (`status ... | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (InputError, CliError, MigrationError, EmbeddedServerError, SettingsError, StorageError) as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectionLost as exc:
        detail = _one_line(str(exc.orig) if getattr(exc, "orig", None) else str(exc))
        url = os.environ.get("DATABASE_URL", "").strip()
        where = f"the database at {redact(normalize_database_url(url))}" if url else "the embedded database"
        print(f"error: cannot reach {where}: {detail}", file=sys.stderr)
        return EXIT_USAGE
    except SchemaMissing as exc:
        detail = _one_line(str(exc.orig) if exc.orig else str(exc))
        if "does not exist" in detail:
            detail += " (has the schema been created? run: variant-pipeline db upgrade)"
        print(f"error: database error: {detail}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a path the user gave that cannot be read or written
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {_one_line(exc.strerror or str(exc))}{where}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug: still one line, never a traceback; exit 1 tells it from bad input
        print(f"error: unexpected {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
