#!/usr/bin/env python
"""The Dagster UI at scale as a person sees it, beside bare Dagster (a benchmark, not a test).

In one home (its own embedded PostgreSQL and Dagster instance, kept with ``--home``):

1. **A real job** of 3 variants runs through the real daemon once. Its Dagster runs and their
   events (materializations with our metadata, asset check evaluations, planned events, run start
   and success) are the templates of the history.
2. For each size in ``--sizes`` (live variant partitions, growing): **the fill**
   (scripts/bench_capacity.py's: jobs submitted with the submission's SQL, walked through every
   stage, their partitions added) grows to that size, and **the history** of every new job is
   written: one run per variant and one per job, as the pipeline makes them, each with the
   template run's events, ids and times replaced. The rows are built by Dagster's own storage
   code (its row builders and table definitions: what ``store_event_batch`` and
   ``add_historical_run`` execute) and inserted many per statement. Per-step events (step
   start/success, outputs, logs) are left out: the pages measured read none of them.
3. **The pages, per web server**: ours (the pipeline's code location) and bare Dagster
   (scripts/dagster_ui_floor_defs.py: the same asset graph with no-op assets, served on the same
   instance, so the same partitions and the same history). Each page is loaded cold (a freshly
   started web server, a new browser, Dagster's cached partition status of every asset wiped so it
   is rebuilt from the history as after an upgrade) and warm (the same page again), and timed until
   the content a person came for is drawn; see ``PAGES``.

    apt-get install -y chromium      # once; the bench drives Debian's Chromium headless
    .venv/bin/python scripts/bench_ui.py --sizes 10000,50000,100000 --home /tmp/vp-ui \\
        --screenshots docs/screenshots/ui-100k --json docs/ui-bench.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from variant_pipeline.config import apply_offline_defaults  # noqa: E402

apply_offline_defaults()  # the model libraries' offline switches, before any of them is imported
from variant_pipeline.deployment import WORKSPACE_YAML  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- 1. The template: one real job ---------------------------------------------------------------

# The events of a run that the history keeps (the pages measured read these; not step events).
HISTORY_EVENTS = (
    "PIPELINE_ENQUEUED", "PIPELINE_STARTING", "PIPELINE_START", "PIPELINE_SUCCESS",
    "ASSET_MATERIALIZATION_PLANNED", "ASSET_CHECK_EVALUATION_PLANNED",
    "ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION",
)


@dataclass
class TemplateRun:
    """One real run, serialized, with the ids that a copy replaces."""

    level: str  # "variant" or "job"
    partition: str
    run_id: str
    start_time: float
    run_body: str
    job_name: str
    snapshot_id: str | None
    tags: dict[str, str]
    duration_s: float
    events: list[dict[str, Any]] = field(default_factory=list)  # rows, event bodies serialized


@dataclass
class Template:
    job_id: str
    variant_ids: list[str]  # in creation order
    runs: list[TemplateRun]


def run_template_job(environment) -> str:
    """The sample job of 3 variants through the real daemon; its job id."""
    from variant_pipeline.services import (
        start_services,
        submit_sample_job,
        wait_for_job,
        wait_for_runs_to_settle,
    )

    services = start_services(environment, webserver_port=None, log=log)
    try:
        job = submit_sample_job(environment.app_url, variants=3)
        status = wait_for_job(environment.app_url, job.job_id, timeout_s=900, log=lambda _m: None)
        if status.status != "done":
            raise RuntimeError(f"the template job ended {status.stage}/{status.status}: {status.error}")
        wait_for_runs_to_settle()
    finally:
        services.stop()
    log(f"template: job {job.job_id} done through the real daemon")
    return str(job.job_id)


def capture_template(instance, engine, job_id: str) -> Template:
    """The latest successful run of each of the job's partitions, and its history events."""
    import dagster as dg
    from dagster import serialize_value

    from variant_pipeline.data.jobs import variant_ids_of_jobs

    variants = variant_ids_of_jobs(engine, [job_id])
    storage = instance.event_log_storage
    runs = []
    for level, key in [("variant", v) for v in variants] + [("job", job_id)]:
        records = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": key},
                                                         statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1)
        if not records:
            raise RuntimeError(f"no successful run for partition {key}")
        record = records[0]
        run = record.dagster_run
        template = TemplateRun(level=level, partition=key, run_id=run.run_id, start_time=record.start_time or 0.0,
                               run_body=serialize_value(run), job_name=run.job_name,
                               snapshot_id=run.job_snapshot_id, tags=dict(run.tags_for_storage()),
                               duration_s=(record.end_time or 0) - (record.start_time or 0))
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None or event.event_type_value not in HISTORY_EVENTS:
                continue
            row = storage._event_to_row(entry)  # Dagster's own row for store_event
            row["offset_s"] = entry.timestamp - (record.start_time or entry.timestamp)
            row["asset_tags"] = dict(storage._tags_for_asset_event(entry))
            row["entry"] = entry
            template.events.append(row)
        runs.append(template)
    counts = collections.Counter(r["dagster_event_type"] for t in runs for r in t.events)
    log(f"template: {len(runs)} runs, events kept per kind: {dict(counts)}")
    return Template(job_id=job_id, variant_ids=variants, runs=runs)


# --- 2. The history ------------------------------------------------------------------------------

_TIMESTAMP = re.compile(r'"timestamp": ([0-9.e+-]+)')


def _replacer(mapping: dict[str, str]):
    pattern = re.compile("|".join(re.escape(k) for k in mapping))
    return lambda text: pattern.sub(lambda m: mapping[m.group(0)], text)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def write_history(instance, template: Template, jobs: list[tuple[str, list[str]]], first_ts: float,
                  spacing_s: float) -> dict[str, int]:
    """The runs and events the pipeline would have left for ``jobs`` (job id, variant ids), one job
    every ``spacing_s`` seconds from ``first_ts``: rows built as Dagster's storage builds them,
    inserted in bulk."""
    from dagster import DagsterEventType

    from variant_pipeline.assets.dagster_internals import (
        AssetCheckExecutionsTable,
        AssetEventTagsTable,
        RunsTable,
        RunTagsTable,
        SqlEventLogStorageTable,
    )

    events_storage = instance.event_log_storage
    run_storage = instance.run_storage
    counts: collections.Counter[str] = collections.Counter()
    last_event_per_asset: dict[str, tuple[Any, int]] = {}
    run_rows, tag_rows, event_rows, event_meta = [], [], [], []
    for index, (job_id, variant_ids) in enumerate(jobs):
        if len(variant_ids) != len(template.variant_ids):
            continue
        start = first_ts + index * spacing_s
        mapping = {template.job_id: job_id, **dict(zip(template.variant_ids, variant_ids, strict=True))}
        for template_run in template.runs:
            run_id = str(uuid.uuid4())
            run_start = start + (0.0 if template_run.level == "variant" else 40.0)
            shift = run_start - template_run.start_time
            replace = _replacer({**mapping, template_run.run_id: run_id})
            partition = mapping[template_run.partition]
            run_rows.append({
                "run_id": run_id, "pipeline_name": template_run.job_name, "status": "SUCCESS",
                "run_body": replace(template_run.run_body), "snapshot_id": template_run.snapshot_id,
                "partition": partition, "partition_set": template_run.tags.get("dagster/partition_set"),
                "create_timestamp": _utc(run_start - 1), "update_timestamp": _utc(run_start + template_run.duration_s),
                "start_time": run_start, "end_time": run_start + template_run.duration_s,
            })
            tag_rows += [{"run_id": run_id, "key": k, "value": replace(v)} for k, v in template_run.tags.items()]
            for row in template_run.events:
                ts = run_start + row["offset_s"]
                body = _TIMESTAMP.sub(lambda m, shift=shift: f'"timestamp": {float(m.group(1)) + shift!r}', replace(row["event"]))
                event_rows.append({"run_id": run_id, "event": body, "dagster_event_type": row["dagster_event_type"],
                                   "timestamp": _utc(ts), "step_key": row["step_key"],
                                   "asset_key": row["asset_key"], "partition": partition if row["partition"] else None})
                event_meta.append((row, replace, ts))
            counts["runs"] += 1
    with events_storage.index_connection() as conn:
        ids = [r[0] for r in conn.execute(SqlEventLogStorageTable.insert().values(event_rows)
                                          .returning(SqlEventLogStorageTable.c.id))] if event_rows else []
    tag_values, check_rows = [], []
    materialization_ids: dict[tuple[str, str], int] = {}
    for event_id, new_row, (row, replace, ts) in zip(ids, event_rows, event_meta, strict=True):
        kind = row["dagster_event_type"]
        counts[kind] += 1
        if kind == DagsterEventType.ASSET_MATERIALIZATION.value:
            materialization_ids[(new_row["run_id"], row["asset_key"])] = event_id
            tag_values += [{"event_id": event_id, "asset_key": row["asset_key"], "key": k, "value": replace(v),
                            "event_timestamp": _utc(ts)} for k, v in row["asset_tags"].items()]
            last_event_per_asset[row["asset_key"]] = (row, event_id, new_row)
        elif kind == DagsterEventType.ASSET_CHECK_EVALUATION.value:
            evaluation = row["entry"].dagster_event.event_specific_data
            check_rows.append({
                "asset_key": row["asset_key"], "check_name": evaluation.check_name,
                "partition": new_row["partition"], "run_id": new_row["run_id"],
                "execution_status": "SUCCEEDED" if evaluation.passed else "FAILED",
                "evaluation_event": new_row["event"], "evaluation_event_timestamp": _utc(ts),
                "evaluation_event_storage_id": event_id,
                "materialization_event_storage_id": materialization_ids.get((new_row["run_id"], row["asset_key"])),
            })
    with events_storage.index_connection() as conn:
        if tag_values:
            conn.execute(AssetEventTagsTable.insert(), tag_values)
        if check_rows:
            conn.execute(AssetCheckExecutionsTable.insert(), check_rows)
        # The asset table keeps each asset's latest materialization: Dagster's own update, once.
        from dagster import deserialize_value

        for _row, event_id, new_row in last_event_per_asset.values():
            events_storage._store_asset_event(conn, deserialize_value(new_row["event"]), event_id)
    with run_storage.connect() as conn:
        conn.execute(RunsTable.insert(), run_rows)
        conn.execute(RunTagsTable.insert(), tag_rows)
    return dict(counts)


def grow(engine, instance, template: Template, target: int, batch_jobs: int = 500) -> dict[str, Any]:
    """Fill up to ``target`` variant partitions (scripts/bench_capacity.py's fill) and write the
    history of every job added, one job a minute going back from now (a deployment's pace)."""
    from bench_capacity import TENANT, fill

    from variant_pipeline.assets.partitions import variant_partitions
    from variant_pipeline.data import audit
    from variant_pipeline.data.jobs import add_tenant

    live = len(instance.get_dynamic_partitions(variant_partitions.name))
    figures: dict[str, Any] = {"live_before": live}
    if target <= live:
        return figures
    with engine.connect() as conn:
        before = audit.all_job_ids(conn)
    started = time.perf_counter()
    add_tenant(engine, TENANT)
    figures["fill"] = fill(engine, instance, target - live, 10**12, 1000)
    with engine.connect() as conn:
        rows = audit.variants_by_job(conn)
    variants_of: dict[str, list[str]] = collections.defaultdict(list)
    for job_id, variant_id in rows:
        if job_id not in before:
            variants_of[job_id].append(variant_id)
    new_jobs = sorted(variants_of.items())
    t0 = time.perf_counter()
    totals: collections.Counter[str] = collections.Counter()
    first_ts = time.time() - 60.0 * (len(new_jobs) + 10)
    for start in range(0, len(new_jobs), batch_jobs):
        totals.update(write_history(instance, template, new_jobs[start:start + batch_jobs],
                                    first_ts + 60.0 * start, 60.0))
        if (start // batch_jobs) % 20 == 0:
            log(f"history: {start + batch_jobs} of {len(new_jobs)} jobs written")
    figures["history"] = dict(totals)
    figures["history_s"] = time.perf_counter() - t0
    figures["read_back"] = read_back(instance)
    figures["grow_s"] = time.perf_counter() - started
    log(f"grew to {target} variant partitions: history {dict(totals)} in {figures['history_s']:.0f} s")
    return figures


def keep_budget(environment, instance, budget: int) -> dict[str, Any]:
    """``variant-pipeline prune --budget N`` on the filled home, as the prune schedule runs it."""
    from variant_pipeline.assets.partitions import variant_partitions

    before = len(instance.get_dynamic_partitions(variant_partitions.name))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "variant_pipeline.cli", "prune", "--budget", str(budget)],
                          env=environment.env, cwd=REPO, capture_output=True, text=True)
    figures = {"budget": budget, "live_before": before, "prune_s": round(time.perf_counter() - started, 1),
               "rc": proc.returncode, "report": (proc.stdout + proc.stderr).strip().splitlines()[-3:],
               "live_after": len(instance.get_dynamic_partitions(variant_partitions.name))}
    log(f"prune --budget {budget}: {figures}")
    return figures


def read_back(instance) -> dict[str, int]:
    """What Dagster's own APIs read from the history: it is a history Dagster understands."""
    import dagster as dg

    from variant_pipeline import stages as stage_graph

    first, last = stage_graph.FIRST_VARIANT_STAGE, stage_graph.LAST_JOB_STAGE
    return {
        "runs": instance.get_runs_count(),
        "successful_runs": instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS])),
        f"{first}_materialized_partitions": len(instance.get_materialized_partitions(dg.AssetKey(first))),
        f"{last}_materialized_partitions": len(instance.get_materialized_partitions(dg.AssetKey(last))),
    }


# --- 3. Web servers ------------------------------------------------------------------------------


def floor_graph(path: Path) -> Path:
    """The pipeline's asset graph as JSON, for the bare code location to copy."""
    from variant_pipeline.definitions import defs

    graph = []
    asset_graph = defs.resolve_asset_graph()
    for key in asset_graph.get_all_asset_keys():
        node = asset_graph.get(key)
        graph.append({"name": key.to_user_string(), "group": node.group_name,
                      "partitions": node.partitions_def.name,
                      "deps": [p.to_user_string() for p in node.parent_keys],
                      "checks": sorted(c.name for c in node.check_keys)})
    path.write_text(json.dumps(graph, indent=1))
    return path


class WebServer:
    """``dagster-webserver`` on loopback serving ours (the workspace) or bare Dagster (the floor
    code location over ``graph``), with ``env`` (its DAGSTER_HOME, the databases)."""

    def __init__(self, env: dict[str, str], which: str, port: int, graph: Path, log_dir: Path) -> None:
        binary = str(Path(sys.executable).with_name("dagster-webserver"))
        target = (["-w", str(WORKSPACE_YAML)] if which == "ours"
                  else ["-f", str(REPO / "scripts" / "dagster_ui_floor_defs.py")])
        self.log_path = log_dir / f"webserver-{which}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        started = time.monotonic()
        self.proc = subprocess.Popen([binary, "-h", "127.0.0.1", "-p", str(port), *target], cwd=REPO,
                                     env={**env, "FLOOR_GRAPH": str(graph)}, stdout=self.log_path.open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = started + 240
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {which} web server exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"the {which} web server did not answer within 240 s") from None
                time.sleep(0.5)
        self._wait_location_loaded(which, deadline)
        self.start_s = time.monotonic() - started

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_location_loaded(self, which: str, deadline: float) -> None:
        """Until the code location is loaded: a page of a location that failed to load shows nothing."""
        from browser_check import graphql

        query = """query { workspaceOrError { ... on Workspace { locationEntries { loadStatus
                   locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
        while True:
            entries = graphql(self.base, query)["workspaceOrError"]["locationEntries"]
            errors = [e["locationOrLoadError"] for e in entries
                      if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"]
            if errors:
                self.stop()
                raise RuntimeError(f"the {which} code location failed to load: {errors[0]['message'][:300]}")
            if entries and all(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the {which} code location did not load within 240 s")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wipe_status_cache(instance) -> None:
    """Forget every asset's cached partition status: the next page rebuilds it from the history."""
    for key in instance.all_asset_keys():
        instance.event_log_storage.wipe_asset_cached_status(key)


# --- 4. The pages, as a person sees them -------------------------------------------------------

# When each page shows what a person came for, as JavaScript over the live DOM. Never "no spinner
# anywhere": a group or asset that is materializing draws a spinning status icon for as long as
# it runs, so a page can be complete with spinners on it (tests/e2e/test_ui_detectors.py).
READY = {
    # Global lineage: every group drawn with its status counts (while Dagster fetches them, a
    # group reads "9 assets (fetching statuses)").
    "lineage": r"""(() => {
        const groups = [...document.querySelectorAll('[class*="CollapsedGroupNode_collapsedGroupNodeBox"]')];
        return groups.length >= %(groups)d && groups.every(g => !/fetching statuses/i.test(g.innerText)
            && [...g.querySelectorAll('.BaseTag')].some(t => /\d/.test(t.innerText)));
    })()""",
    # An asset's overview: its latest materialization (when, which run) drawn.
    "overview": r"""/Latest materialization\s+\S[^\n]*ago/.test(document.body.innerText)""",
    # An asset's partitions: the status counts and the first partitions of the list.
    "partitions": r"""/Materialized \([\d,]+\)[\s\S]*Missing \([\d,]+\)\s+[0-9a-f]{8}-/.test(document.body.innerText)""",
    # The Materialize dialog open with its partition picker.
    "dialog": r"""!!document.querySelector('[role="dialog"] [class*="TagSelector_placeholder"]')""",
    # The one partition found by the search.
    "found": r"""(() => { const t = document.body.innerText;
        return t.includes("Select all (1)") && t.includes(%(variant)s); })()""",
    # ... and selected.
    "selected": r"""/\b1 partition\b/.test((document.querySelector('[role="dialog"]') || document.body).innerText)""",
    # A job's partition of its last stage with the gallery metadata row drawn.
    "gallery_row": r"""(() => { const t = document.body.innerText;
        return t.includes(%(job)s) && /\bgallery\s+(\S[^\n]*\s+)?\[Show Markdown\]/.test(t); })()""",
    # ... and the gallery opened: every variant's image decoded, the copy shown.
    "gallery": r"""(() => { const imgs = [...document.querySelectorAll('img')].filter(
            i => i.src.startsWith('data:image') && i.complete && i.naturalWidth > 0);
        return imgs.length >= 3 && document.body.innerText.includes('Instagram copy'); })()""",
    # The runs list: its first rows drawn.
    "runs": r"""document.querySelectorAll('[class*="RunsFeedRow_row"] a[href^="/runs/"]').length >= 5""",
}


def wait_ready(browser, js: str, timeout_s: float, since: float | None = None) -> float | None:
    """Seconds from ``since`` (default now) until ``js`` is true; None if not within the timeout."""
    from browser_check import CheckFailed, dismiss_dialogs

    since = time.monotonic() if since is None else since
    guarded = f"(() => {{ try {{ return !!({js}); }} catch (e) {{ return false; }} }})()"  # no body mid-navigation
    while time.monotonic() - since < timeout_s:
        try:
            dismiss_dialogs(browser)
            if browser.evaluate(guarded):
                return time.monotonic() - since
        except CheckFailed:  # the page's context went away under the script: a navigation
            pass
        time.sleep(0.05)
    return None


def load(browser, url: str, js: str, timeout_s: float) -> float | None:
    browser.navigate("about:blank")
    started = time.monotonic()
    browser.navigate(url)
    return wait_ready(browser, js, timeout_s, started)


def materialize_dialog(browser, base: str, variant: str, timeout_s: float) -> dict[str, float | None]:
    """The asset page, then Materialize: the dialog, one partition found by search, selected."""
    figures: dict[str, float | None] = {"page": load(browser, f"{base}/assets/img_gen", READY["overview"], timeout_s)}
    if figures["page"] is None:
        return figures
    browser.click("[...document.querySelectorAll('button')].find(b => b.innerText.trim().startsWith('Materialize'))")
    figures["dialog"] = wait_ready(browser, READY["dialog"], timeout_s)
    if figures["dialog"] is None:
        return figures
    browser.click("document.querySelector('[role=\"dialog\"] [class*=\"TagSelector_placeholder\"]')")
    time.sleep(0.3)  # the popover's search box takes the focus
    browser.call("Input.insertText", session=True, text=variant[:13])
    figures["found"] = wait_ready(browser, READY["found"] % {"variant": json.dumps(variant)}, timeout_s)
    if figures["found"] is None:
        return figures
    browser.click(f"[...document.querySelectorAll('[title={json.dumps(variant)}]')].pop()")
    figures["selected"] = wait_ready(browser, READY["selected"], timeout_s)
    waits = [figures[k] for k in ("dialog", "found", "selected")]
    figures["s"] = None if None in waits else sum(w for w in waits if w is not None)
    return figures


def gallery(browser, base: str, job: str, timeout_s: float) -> dict[str, float | None]:
    """A job's last-stage partition, then its gallery metadata opened."""
    url = f"{base}/assets/instagram_feed_gen?view=partitions&partition={job}"
    figures: dict[str, float | None] = {"row": load(browser, url, READY["gallery_row"] % {"job": json.dumps(job)},
                                                    timeout_s)}
    if figures["row"] is None:
        return figures
    browser.click("(() => { const rows = [...document.querySelectorAll('tr')].filter("
                  "r => /^\\s*gallery\\b/.test(r.innerText)); const row = rows.pop();"
                  " return row && [...row.querySelectorAll('button, a, span')].find("
                  "e => e.innerText.trim() === '[Show Markdown]'); })()")
    figures["opened"] = wait_ready(browser, READY["gallery"], timeout_s)
    figures["s"] = None if figures["opened"] is None else figures["row"] + figures["opened"]
    return figures


def measure_page(browser, name: str, base: str, keys: dict[str, str], timeout_s: float) -> dict[str, Any]:
    if name == "materialize dialog":
        return materialize_dialog(browser, base, keys["variant"], timeout_s)
    if name == "job gallery":
        return gallery(browser, base, keys["job"], timeout_s)
    path, ready = {
        "lineage": ("/asset-groups", READY["lineage"] % {"groups": 2}),
        "asset overview": ("/assets/img_gen", READY["overview"]),
        "asset partitions": ("/assets/img_gen?view=partitions", READY["partitions"]),
        "runs": ("/runs", READY["runs"]),
    }[name]
    return {"s": load(browser, base + path, ready, timeout_s)}


PAGE_NAMES = ["lineage", "asset overview", "asset partitions", "materialize dialog", "job gallery", "runs"]


def sample_keys(engine, template: Template) -> dict[str, str]:
    """A variant and its job from the middle of the live ones (not the template job)."""
    from variant_pipeline.data import audit

    with engine.connect() as conn:
        total = audit.job_count(conn)
        live = audit.live_done_job_count(conn)
        job = audit.live_done_job_at(conn, min(total, live) // 2, other_than=template.job_id)
        variant = audit.first_variant_of(conn, job)
    return {"job": job, "variant": variant}


def measure_size(environment, instance, graph: Path, args, binary: str, keys: dict[str, str],
                 largest: bool) -> dict[str, Any]:
    """Every page, cold and warm, on ours and on bare Dagster side by side."""
    from browser_check import Chromium, save_png

    which = ["ours"] if args.no_bare else ["ours", "bare"]
    screenshots = args.screenshots if largest else None
    servers = {}
    out: dict[str, Any] = {"keys": keys, "load_1m_before": os.getloadavg()[0]}
    try:
        for offset, name in enumerate(which):
            servers[name] = WebServer(environment.env, name, args.port + offset, graph,
                                      environment.settings.home / "logs")
            out[f"{name}_webserver_start_s"] = round(servers[name].start_s, 1)
        browsers = {name: Chromium(binary, 1400, 900) for name in which}
        try:
            for name in which:  # the UI's scripts into each browser's cache
                load(browsers[name], servers[name].base + "/runs", READY["runs"], args.timeout)
            for page in PAGE_NAMES:
                for name in which:
                    wipe_status_cache(instance)
                    for attempt in ("cold", "warm"):
                        figures = measure_page(browsers[name], page, servers[name].base, keys, args.timeout)
                        out.setdefault(page, {})[f"{name} {attempt}"] = figures
                        seconds = figures.get("s")
                        log(f"ui {page} ({name}, {attempt}): "
                            + (f"{seconds:.1f} s" if seconds is not None else f"not drawn within {args.timeout:.0f} s")
                            + (f"  {figures}" if len(figures) > 1 else ""))
                    if screenshots is not None:
                        save_png(browsers[name].screenshot(),
                                 screenshots / f"{page.replace(' ', '-')}-{name}.png", 400 * 1024)
            if args.profile and largest:
                out["profile"] = {name: profile_page(servers[name], browsers[name], instance, args.profile, keys,
                                                     args.timeout, environment.settings.home / f"profile-{name}.txt")
                                  for name in which}
        finally:
            for browser in browsers.values():
                browser.close()
    finally:
        for server in servers.values():
            server.stop()
    out["load_1m_after"] = os.getloadavg()[0]
    return out


def profile_page(server: WebServer, browser, instance, page: str, keys: dict[str, str], timeout_s: float,
                 out: Path) -> dict[str, Any]:
    """py-spy on a web server (and its code server) while ``page`` loads first-view and twice warm:
    the share of busy samples in each of the heaviest frames."""
    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--subprocesses", "--idle",
                            "--format", "raw", "--rate", "100", "-o", str(out), "--pid", str(server.proc.pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    wipe_status_cache(instance)
    times = [measure_page(browser, page, server.base, keys, timeout_s).get("s") for _ in range(3)]
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=120)
    return {"page": page, "times_s": times, "raw": str(out), "heaviest": heaviest_frames(out)}


_IDLE = ("wait (threading", "select (", "_recv", "recv (", "sleep", "poll (", "epoll", "accept (", "_worker (concurrent")


def heaviest_frames(path: Path, top: int = 15) -> list[tuple[str, float]]:
    """Frames of Dagster or ours by the share of busy samples whose stack holds them."""
    inclusive: collections.Counter[str] = collections.Counter()
    busy = 0
    if not path.exists():
        return []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in _IDLE):
            continue
        busy += int(count)
        for frame in set(frames):
            if "dagster" in frame or "variant_pipeline" in frame or "sqlalchemy" in frame:
                inclusive[frame] += int(count)
    return [(frame, round(n / busy, 3)) for frame, n in inclusive.most_common(top)] if busy else []


# --- Main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,50000,100000",
                   help="live variant partitions to measure at, comma-separated, growing")
    p.add_argument("--home", type=Path, help="the home to fill and keep (default: a temporary one, removed)")
    p.add_argument("--port", type=int, default=3461, help="ours on this port, bare Dagster on the next")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a page may take before it counts as not drawn")
    p.add_argument("--screenshots", type=Path, help="save each page at the largest size here")
    p.add_argument("--no-bare", action="store_true", help="measure only ours")
    p.add_argument("--budget", type=int, help="after the sizes, prune to this partition budget and measure again")
    p.add_argument("--profile", choices=PAGE_NAMES, help="at the largest size, py-spy each web server on this page")
    p.add_argument("--serve", action="store_true",
                   help="after the first size, serve both UIs until interrupted (to look at them)")
    p.add_argument("--json", type=Path, help="write the figures here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if sizes != sorted(sizes) or not sizes:
        print("bench_ui: --sizes must be growing numbers, e.g. 10000,50000,100000", file=sys.stderr)
        return 2
    binary = shutil.which("chromium")
    if binary is None and not args.serve:
        print("bench_ui: chromium is not installed (apt-get install -y chromium)", file=sys.stderr)
        return 2
    home = args.home or Path(tempfile.mkdtemp(prefix="vp-ui-"))
    os.environ["VARIANT_PIPELINE_HOME"] = str(home)
    for name in ("DATABASE_URL", "DAGSTER_DATABASE_URL", "VP_DAGSTER_STORAGE_URL", "DAGSTER_HOME"):
        os.environ.pop(name, None)
    from bench_capacity import close_home, machine, report

    from variant_pipeline.data.engine import get_engine
    from variant_pipeline.services import prepare_environment

    figures: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                               "sizes": {}}
    try:
        environment = prepare_environment(log=log)
        engine = get_engine(environment.app_url)
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            marker = home / "bench-ui-template-job"
            if not marker.exists():
                marker.write_text(run_template_job(environment))
            template = capture_template(instance, engine, marker.read_text().strip())
            graph = floor_graph(home / "floor-graph.json")
            for size in sizes:
                entry = figures["sizes"][str(size)] = grow(engine, instance, template, size)
                if args.serve:
                    logs = environment.settings.home / "logs"
                    servers = [WebServer(environment.env, "ours", args.port, graph, logs),
                               WebServer(environment.env, "bare", args.port + 1, graph, logs)]
                    log(f"serving ours at {servers[0].base}, bare Dagster at {servers[1].base}; Ctrl-C stops")
                    try:
                        while True:
                            time.sleep(1)
                    except KeyboardInterrupt:
                        pass
                    finally:
                        for server in servers:
                            server.stop()
                    return 0
                keys = sample_keys(engine, template)
                entry["pages"] = measure_size(environment, instance, graph, args, binary, keys,
                                              largest=size == sizes[-1])
                if args.json:
                    args.json.write_text(json.dumps(figures, indent=2, default=str))
            if args.budget is not None:
                figures["budget"] = keep_budget(environment, instance, args.budget)
                keys = sample_keys(engine, template)
                figures["budget"]["pages"] = measure_size(environment, instance, graph, args, binary, keys,
                                                          largest=False)
                if args.json:
                    args.json.write_text(json.dumps(figures, indent=2, default=str))
    finally:
        close_home(home, keep=args.home is not None)
    report(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
