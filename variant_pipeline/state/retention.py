"""Retention: removing what a finished job leaves behind, while the pipeline keeps running.

``prune`` (``variant-pipeline prune --older-than DURATION``, and the optional daily schedule)
removes, for every job finished (done or failed) before the cutoff:

- its dynamic partitions in Dagster (the job's and its variants') and the Dagster runs of those
  partitions, with their event records (materializations, check evaluations, logs): Dagster
  rebuilds an asset's partition status from every run's events each time a partition is added,
  so history kept for partitions that are gone made every page slower with age;
- its asset files (product photo, generated, mask, planner, overlay images);
- with ``rows=True``, its rows: the job row, and through its foreign keys (ON DELETE CASCADE)
  its inputs, variants, image rows, stage outputs, traces and attempts.

It also removes outbox events older than the cutoff that the outbox sensor's saved cursor has
passed (in batches), and orphan files: files under the asset root that no live ``image_assets``
row names (an image of an attempt that was superseded or timed out, an image a re-run replaced;
a row of a pruned job written before its prune is not live: its file was meant to go with it).

A job's files are deleted after its transaction commits. If the asset store fails then (an
object store restarting), the job stays pruned, the report says how many files are left, and
the next prune's orphan scan removes them; a store that cannot be reached before the commit
fails the prune with one line and changes nothing.

The partition budget (``partition_budget``, ``VP_PARTITION_BUDGET``): Dagster's UI slows down
as an asset's partitions and their history grow (docs/capacity.md measures by how much). When
more variant partitions than the budget are live after the age rule, prune removes what Dagster
keeps of the jobs that finished longest ago (their partitions and runs; our rows and files stay)
until the count is within it, by the same
per-job transaction as the age rule, so a job with work in flight is never touched. ``status``,
``results`` and the gallery go on answering for such a job from its rows and say so; a later
age-rule prune removes its files as for any other job.

Safety against work in flight. A job is pruned in one short transaction per job that first
takes, without waiting, the row locks the pipeline's writers take (its variants, then the job:
a claim, a retry and the rollup lock them) and the partition locks its workers hold; a job
whose rows or partitions are busy is skipped this time. Under those locks it checks again that
the job and every variant are finished, before the cutoff, with no attempt running and no
Dagster run in flight for its partitions, and only then deletes. A retry waits for that
transaction and then finds the job marked pruned, which it refuses (``request_retry``). An orphan file is removed only if it is older than the
cutoff, than ``orphan_min_age_s`` and than the oldest attempt still running (an attempt's file
is written after its claim and named by a row when its stage commits).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from variant_pipeline.data import partition_state
from variant_pipeline.data import retention as queries
from variant_pipeline.data.engine import Engine
from variant_pipeline.data.outbox import decode_cursor
from variant_pipeline.data.storage import AssetStore, StorageError, StoredFile
from variant_pipeline.validation import InputError


class Orchestrator(Protocol):
    """What prune needs from Dagster (sensors/retention.py implements it)."""

    def existing_partitions(self, level: str, keys: Sequence[str]) -> list[str]: ...
    def partition_count(self, level: str) -> int: ...
    def delete_partitions(self, level: str, keys: Sequence[str]) -> None: ...
    def runs_of(self, keys: Sequence[str]) -> list[str]: ...
    def delete_runs(self, run_ids: Sequence[str]) -> None: ...
    def partitions_in_flight(self, keys: Sequence[str]) -> set[str]: ...
    def outbox_cursor(self) -> str | None: ...


@dataclass
class PrunedJob:
    job_id: str
    status: str
    finished_at: datetime
    variant_partitions: int
    job_partitions: int
    files: int
    bytes: int
    rows_deleted: bool
    reason: str = "age"  # "age": finished before the cutoff; "budget": to keep the partition budget
    runs: int = 0  # Dagster runs of its partitions removed, with their event records


@dataclass
class BudgetReport:
    budget: int
    live: int  # live variant partitions when prune began
    over: int = 0  # still over the budget at the end: the rest belongs to jobs not finished or in use


@dataclass
class PruneReport:
    cutoff: datetime | None  # None: no age rule this time (the partition budget only)
    dry_run: bool
    rows: bool
    jobs: list[PrunedJob] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # finished jobs skipped: something held them
    events: int = 0
    outbox_cursor: str | None = None
    orphans: list[str] = field(default_factory=list)
    orphan_bytes: int = 0
    budget: BudgetReport | None = None
    # The asset store failed while deleting: files left for the next orphan scan, and why.
    files_left: int = 0
    store_errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        dry = " (dry run: nothing changed)" if self.dry_run else ""
        out = [f"cutoff {self.cutoff.isoformat(timespec='seconds')}{dry}" if self.cutoff is not None
               else f"no age rule (no --older-than / VP_PRUNE_OLDER_THAN): the partition budget only{dry}"]
        for job in self.jobs:
            finished = f"job {job.job_id} ({job.status}, finished {job.finished_at.isoformat(timespec='seconds')}): "
            if job.reason == "budget":
                out.append(f"{finished}{verb} {job.variant_partitions} variant and {job.job_partitions} job "
                           f"partitions and {job.runs} Dagster runs to keep the partition budget "
                           "(its rows and files stay)")
                continue
            out.append(
                f"{finished}{verb} {job.variant_partitions} variant and {job.job_partitions} job partitions, "
                f"{job.runs} Dagster runs, {job.files} files ({job.bytes} bytes)"
                + (", its rows" if job.rows_deleted else "")
            )
        for job_id in self.busy:
            out.append(f"job {job_id}: skipped, in use (a run, a claim or a retry holds it); the next prune takes it")
        if self.budget is not None:
            by_budget = sum(j.variant_partitions for j in self.jobs if j.reason == "budget")
            out.append(f"partition budget {self.budget.budget}: {self.budget.live} live variant partitions; "
                       f"{verb} {by_budget} to keep it (oldest finished jobs first)")
            if self.budget.over:
                out.append(f"partition budget: still {self.budget.over} over: every other live variant partition "
                           "belongs to a job not finished or in use")
        if self.cutoff is not None and self.outbox_cursor is None:
            out.append("outbox: the outbox sensor has no saved cursor yet; no events removed")
        elif self.cutoff is not None:
            out.append(f"outbox: {verb} {self.events} events older than the cutoff and behind the sensor's cursor")
        for path in self.orphans:
            out.append(f"orphan file {path}")
        if self.files_left:
            out.append(f"asset store: {self.files_left} files of pruned jobs not deleted ({self.store_errors[0]}); "
                       "the next prune's orphan scan removes them")
        elif self.store_errors:
            out.append(f"asset store: orphan scan not finished: {self.store_errors[0]}")
        files = sum(j.files for j in self.jobs)
        out.append(
            f"total: {verb} {len(self.jobs)} jobs' partitions "
            f"({sum(j.variant_partitions for j in self.jobs)} variant, {sum(j.job_partitions for j in self.jobs)} job), "
            f"{sum(j.runs for j in self.jobs)} Dagster runs, {files} job files, {len(self.orphans)} orphan files ({self.orphan_bytes} bytes), "
            f"{sum(1 for j in self.jobs if j.rows_deleted)} jobs' rows, {self.events} events"
        )
        return out


def prune(engine: Engine, orchestrator: Orchestrator, store: AssetStore, older_than: timedelta | None, *,
          rows: bool = False, dry_run: bool = False, orphan_min_age_s: float = 3600.0,
          partition_budget: int | None = None) -> PruneReport:
    """Remove what jobs finished before ``now - older_than`` left behind (``None``: no age rule),
    then keep the live variant partitions within ``partition_budget`` (``None``: no budget); see
    the module docstring."""
    if older_than is None and partition_budget is None:
        raise ValueError("prune needs an age (older_than) or a partition budget")
    with engine.connect() as conn:
        now = partition_state.database_now(conn)
    report = PruneReport(cutoff=None if older_than is None else now - older_than, dry_run=dry_run, rows=rows)
    if partition_budget is not None:
        report.budget = BudgetReport(partition_budget, orchestrator.partition_count("variant"))
    if report.cutoff is not None:
        for candidate in queries.finished_jobs(engine, report.cutoff, with_pruned=rows):
            _prune_job(engine, orchestrator, store, candidate, report, report.cutoff)
    if report.budget is not None:
        _keep_budget(engine, orchestrator, store, report, now)
    if report.cutoff is not None:
        _trim_outbox(engine, orchestrator, report)
        try:
            _remove_orphans(engine, store, report, now - timedelta(seconds=orphan_min_age_s))
        except StorageError as exc:  # the store went away: what was done stands; the next prune goes on
            report.store_errors.append(str(exc))
    return report


def _keep_budget(engine: Engine, orchestrator: Orchestrator, store: AssetStore, report: PruneReport, now: datetime) -> None:
    """Remove the partitions of the jobs that finished longest ago until the live variant
    partitions are within the budget (counting what the age rule removed, or would in a dry run)."""
    assert report.budget is not None
    over = report.budget.live - report.budget.budget - sum(j.variant_partitions for j in report.jobs)
    seen = {j.job_id for j in report.jobs} | set(report.busy)
    if over > 0:
        for candidate in queries.partitioned_jobs(engine, now):
            if candidate in seen:
                continue
            before = len(report.jobs)
            _prune_job(engine, orchestrator, store, candidate, report, now, budget=True)
            over -= sum(j.variant_partitions for j in report.jobs[before:])
            if over <= 0:
                break
    report.budget.over = max(over, 0)


def _prune_job(engine: Engine, orchestrator: Orchestrator, store: AssetStore, job_id: str, report: PruneReport,
               cutoff: datetime, *, budget: bool = False) -> None:
    """Prune one job in one transaction: with ``budget``, its partitions only."""
    with engine.connect() as conn:
        try:
            with conn.begin() as tx:
                found = queries.lock_finished_job(conn, job_id, cutoff)
                if found is None:
                    return  # reopened or gone since the page was read
                keys = [*found.variant_keys, job_id]
                if orchestrator.partitions_in_flight(keys):
                    raise queries.JobBusy(job_id)
                paths = [] if budget else queries.image_paths_of(conn, job_id)
                variant_parts = orchestrator.existing_partitions("variant", found.variant_keys)
                job_parts = orchestrator.existing_partitions("job", [job_id])
                # The job's runs go with its partitions: Dagster rebuilds an asset's partition
                # status from every run's events whenever a partition is added, so runs kept for
                # partitions that are gone would keep every page's cost growing with age.
                runs = orchestrator.runs_of(keys)
                files = [f for f in (_stat(store, p) for p in paths) if f is not None]
                if report.dry_run:
                    tx.rollback()
                else:
                    orchestrator.delete_partitions("variant", variant_parts)
                    orchestrator.delete_partitions("job", job_parts)
                    orchestrator.delete_runs(runs)
                    queries.prune_job(conn, job_id, delete_rows=report.rows and not budget, partitions_only=budget)
        except queries.JobBusy:
            report.busy.append(job_id)
            return
    if not report.dry_run:
        _delete_files(store, [path for path, _size in files], report)
    report.jobs.append(PrunedJob(job_id, found.status, found.finished_at, len(variant_parts), len(job_parts),
                                 len(files), sum(size for _p, size in files), report.rows and not budget,
                                 "budget" if budget else "age", len(runs)))


def _delete_files(store: AssetStore, paths: list[str], report: PruneReport) -> None:
    """Delete a pruned job's files, after its commit: one the store fails on is left to the next
    orphan scan (its row is no longer live), and counted."""
    for index, path in enumerate(paths):
        try:
            store.delete(path)
        except StorageError as exc:
            report.files_left += len(paths) - index
            report.store_errors.append(str(exc))
            return


def _stat(store: AssetStore, relative: str) -> tuple[str, int] | None:
    """(key, size) of a job's file, None when it is gone or the key would leave the root."""
    try:
        size = store.size_of(relative)
    except InputError:
        return None  # the schema forbids such paths; never follow one out of the root
    return None if size is None else (relative, size)


def _trim_outbox(engine: Engine, orchestrator: Orchestrator, report: PruneReport) -> None:
    """Delete events older than the cutoff at or before the sensor's saved cursor, a batch per
    transaction. Events after the saved cursor are never touched: a tick in progress (or one
    replayed after a crash) reads only after it."""
    report.outbox_cursor = orchestrator.outbox_cursor()
    if report.outbox_cursor is None:
        return
    assert report.cutoff is not None
    xid, event_id = decode_cursor(report.outbox_cursor)
    if report.dry_run:
        report.events = queries.count_events_behind(engine, xid, event_id, report.cutoff)
    else:
        report.events = queries.delete_events_behind(engine, xid, event_id, report.cutoff)


def _remove_orphans(engine: Engine, store: AssetStore, report: PruneReport, min_age_cutoff: datetime) -> None:
    # List first, then ask the database: a file whose row commits between the two is seen as
    # named; one whose attempt is still running is younger than that attempt's start. The listing
    # is paged (an object store answers a thousand keys a request).
    assert report.cutoff is not None
    limit = min(report.cutoff, min_age_cutoff)
    candidates = [f for f in store.files("tenants") if f.modified < limit]
    if not candidates:
        return
    with engine.connect() as conn:
        oldest_running = queries.oldest_running_attempt(conn)
        named = queries.live_paths(conn, [f.relative_path for f in candidates])
    for found in orphans(candidates, named, oldest_running):
        if not report.dry_run:
            store.delete(found.relative_path)
        report.orphans.append(found.relative_path)
        report.orphan_bytes += found.size


def orphans(candidates: Iterable[StoredFile], named: Set[str], oldest_running: datetime | None) -> list[StoredFile]:
    """The orphan rule, of files already older than the cutoffs: those no live row names, and
    older than the oldest attempt still running (its file may be written and not yet named), in
    path order."""
    return sorted((f for f in candidates
                   if f.relative_path not in named and (oldest_running is None or f.modified < oldest_running)),
                  key=lambda f: f.relative_path)
