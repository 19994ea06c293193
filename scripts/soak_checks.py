"""The soak's invariants: each check takes a database connection (and what else it needs, passed
in) and returns a list of violation strings, one line each, empty when the invariant holds. The
rows come from ``variant_pipeline.data.audit``: queries of their own, not the pipeline's, so that
a mistake in how the pipeline reads its tables is not repeated by the check meant to catch it.

``scripts/soak.py`` calls the *always* checks every 30 s while faults and load run, in one
REPEATABLE READ snapshot (``always_checks``), and the *final* checks after its quiet period
(``final_checks``). ``tests/integration/test_soak_checker.py`` plants violations in a real PostgreSQL and
checks each one is reported.

Always true, at any moment (a violation here never heals):

- ``check_committed_rounds``: at most one committed (``done``) attempt per (partition, stage,
  round), and no stage redone by a stale or duplicated request (the round rule below);
- ``check_images``: every image a row names exists and decodes (jobs pruned since they finished
  excepted: prune deletes their files on purpose; files planted as bad input excepted);
- ``check_bad_cli_tenant``: refused CLI input wrote nothing (no row of the tenant the soak
  reserves for bad CLI input, no file under its folder);
- ``check_event_chains``: every state change of every row has its outbox event: for each row, the
  retained events form one unbroken chain (each event's old state is the previous event's new
  state) ending at the row's current state. Event *ids* are not checked for gaps: a transaction
  that rolls back (a lost connection, a server restart, a fenced write) burns sequence values
  for good, so id gaps are normal; a missing *state change* is what would be a lost event.
  ``prune`` deletes events older than its cutoff, oldest first: the chain may start late;
- stateful watches (``LostClaimWatch``, ``DuplicateRunWatch``): a ``running`` attempt whose
  partition lock is free for longer than the recovery period (while the daemon and the database
  are up), and two live runs (both run leases held) of the pipeline for one partition, seen in
  two consecutive checks.

The round rule (``check_committed_rounds``). Every try at a stage for a partition is a
``stage_attempts`` row. A *round* starts at each attempt numbered 1 (an automatic retry counts
on: 2, 3...; everything else claims attempt 1). Two committed attempts in one round is a
violation. ``skipped`` rows (a stale run recording that it did nothing) are not attempts and
take no part. A new round after a committed one is legitimate only when something asked for the
work again after that commit:

- a person: a hand-started run (no ``variant_pipeline/launched_by`` tag: the UI, ``dagster asset
  materialize``, a backfill), or the continuation the pipeline launches after one;
- a request the pipeline acts on: ``variant-pipeline retry``, an upstream system re-queueing the
  row, a reopened job's rollup, a recovery retry whose downstream stages follow an earlier redo.
  These runs carry a run key (``dagster/run_key``) and were *created after* the commit they redo.

So, for rounds of one (partition, stage) that each committed, in order:
  (A) one committed attempt per round;
  (B) no two rounds opened by the same request (the same run key, or the same hand run): a run
      key launched twice (two daemons racing on one sensor tick) redoes finished work;
  (C) a round opened by a pipeline-launched run (outbox or recovery sensor) after an earlier
      commit needs a run created after that commit: a run created before it is a stale
      duplicate that redid work already committed.
Hand runs and continuations are exempt from (C): a person may click before the pipeline's own
run commits (their run waits its turn), and that redo is what they asked for.
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from variant_pipeline.data import audit
from variant_pipeline.data.engine import Connection

if TYPE_CHECKING:
    from variant_pipeline.data.storage import AssetStore

LAUNCHED_BY_TAG = "variant_pipeline/launched_by"
RUN_KEY_TAG = "dagster/run_key"
PARTITION_TAG = "dagster/partition"
PIPELINE_SENSORS = ("outbox_sensor", "recovery_sensor")
LAST_VARIANT_STAGE = "iou_eval"
LAST_JOB_STAGE = "instagram_feed_gen"
PIPELINE_JOB_NAMES = ("variant_pipeline", "job_pipeline")
IN_FLIGHT_RUN_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


# --- What the checks need to know of Dagster runs ---------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    launched_by: str | None  # the sensor that launched it; None for a hand-started run
    run_key: str | None
    created_at: datetime | None

    @property
    def request(self) -> str:
        """What asked for this run: its run key, or the run itself when a person started it."""
        if self.launched_by and self.run_key:
            return f"key:{self.run_key}"
        return f"run:{self.run_id}"

    @property
    def by_pipeline(self) -> bool:
        return self.launched_by in PIPELINE_SENSORS


def run_infos(instance: Any, run_ids: Iterable[str]) -> dict[str, RunInfo]:
    """RunInfo for each run id Dagster knows (public API only)."""
    import dagster as dg

    ids = sorted({r for r in run_ids if r})
    out: dict[str, RunInfo] = {}
    for start in range(0, len(ids), 200):
        for record in instance.get_run_records(dg.RunsFilter(run_ids=ids[start:start + 200])):
            run = record.dagster_run
            out[run.run_id] = RunInfo(run.run_id, run.tags.get(LAUNCHED_BY_TAG), run.tags.get(RUN_KEY_TAG),
                                      record.create_timestamp)
    return out


# --- (A)(B)(C): committed attempts per round -----------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    attempt_id: int
    partition: str
    level: str
    stage: str
    attempt: int
    run_id: str | None
    outcome: str
    finished_at: datetime | None


def load_attempts(conn: Connection) -> list[Attempt]:
    """Every attempt, oldest first."""
    return [Attempt(*r) for r in audit.all_attempts(conn)]


def load_attempts_at_stage(conn: Connection, partition: str, level: str, stage: str) -> list[Attempt]:
    """One partition's attempts at one stage, oldest first."""
    return [Attempt(*r) for r in audit.attempts_at_stage(conn, partition, level, stage)]


def round_violations(attempts: Iterable[Attempt], runs: Mapping[str, RunInfo]) -> list[str]:
    """The round rule (module docstring) over attempt records; pure."""
    by_stage: dict[tuple[str, str], list[Attempt]] = defaultdict(list)
    for a in sorted(attempts, key=lambda a: a.attempt_id):
        if a.outcome != "skipped":  # a stale run's record of what it did not do: not an attempt
            by_stage[(a.partition, a.stage)].append(a)
    out: list[str] = []
    for (partition, stage), rows in by_stage.items():
        rounds: list[list[Attempt]] = []
        for a in rows:
            if a.attempt == 1 or not rounds:
                rounds.append([])
            rounds[-1].append(a)
        previous_done: Attempt | None = None
        opened_by: dict[str, int] = {}  # request -> attempt_id of the committed round it opened
        for round_ in rounds:
            done = [a for a in round_ if a.outcome == "done"]
            if len(done) > 1:
                out.append(f"committed twice in one round: {round_[0].level} {partition} stage {stage} attempts "
                           + ", ".join(f"#{a.attempt_id} (attempt {a.attempt}, run {a.run_id})" for a in done))
            if not done:
                continue
            opener = round_[0]
            info = runs.get(opener.run_id or "") or RunInfo(opener.run_id or "?", None, None, None)
            if previous_done is not None:
                if info.request in opened_by:
                    out.append(
                        f"stage redone by a duplicated request: {opener.level} {partition} stage {stage} committed "
                        f"by attempt #{done[0].attempt_id} (run {done[0].run_id}) after #{opened_by[info.request]} "
                        f"committed for the same request {info.request}")
                elif (info.by_pipeline and info.created_at is not None and previous_done.finished_at is not None
                      and info.created_at < previous_done.finished_at):
                    out.append(
                        f"stage redone by a stale run: {opener.level} {partition} stage {stage} committed by "
                        f"attempt #{done[0].attempt_id} of run {opener.run_id} ({info.launched_by}, created "
                        f"{info.created_at.isoformat()}) after attempt #{previous_done.attempt_id} had committed "
                        f"at {previous_done.finished_at.isoformat()}")
            opened_by.setdefault(info.request, done[0].attempt_id)
            previous_done = done[-1]
    return out


def check_committed_rounds(conn: Connection, runs: Mapping[str, RunInfo]) -> list[str]:
    return round_violations(load_attempts(conn), runs)


# --- Images ------------------------------------------------------------------------------------


def _decodes(store: AssetStore, path: str) -> str | None:
    from PIL import Image

    from variant_pipeline.data.storage import AssetMissing, StorageError

    try:
        data = store.read_bytes(path)
    except AssetMissing:
        return "missing"
    except (StorageError, OSError) as exc:
        return f"unreadable ({exc})"
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception as exc:  # any decoder error
        return f"does not decode ({type(exc).__name__}: {exc})"
    return None


def check_images(conn: Connection, store: AssetStore, exclude_paths: Iterable[str] = (),
                 recheck: Callable[[str], bool] | None = None, verified: set[str] | None = None) -> list[str]:
    """Every image_assets file exists and decodes, except those of rows older than their job's
    last prune (prune deletes a finished job's files on purpose and keeps its rows).

    ``recheck(path)`` (optional) is asked again before a missing file is reported: it answers
    whether the row still names it under an unpruned job (prune deletes files, then commits).
    ``verified`` (optional) remembers files already decoded: files are written once under a new
    name, so later rounds only check that they are still there.
    """
    skip = set(exclude_paths)
    out = []
    for path, kind, owner in audit.unpruned_images(conn):
        if path in skip:
            continue
        if verified is not None and path in verified:
            problem = None if store.size_of(path) is not None else "missing"
        else:
            problem = _decodes(store, path)
            if problem is None and verified is not None:
                verified.add(path)
        if problem == "missing" and recheck is not None and not recheck(path):
            continue
        if problem:
            out.append(f"image {problem}: {kind} {path} of {owner}")
    return out


def still_named_unpruned(conn_factory: Callable[[], Any]) -> Callable[[str], bool]:
    """A ``recheck`` for check_images: a fresh look, a moment later, in a new transaction."""
    def recheck(path: str) -> bool:
        time.sleep(1.0)
        with conn_factory() as conn:
            return audit.image_named_unpruned(conn, path)
    return recheck


# --- Bad CLI input wrote nothing ---------------------------------------------------------------


def check_bad_cli_tenant(conn: Connection, store: AssetStore, tenant: str) -> list[str]:
    out = []
    jobs, images = audit.tenant_row_counts(conn, tenant)
    if jobs or images:
        out.append(f"refused CLI input wrote rows: tenant {tenant} has {jobs} jobs and {images} image rows")
    files = [f.relative_path for f in store.files(f"tenants/{tenant}")]
    if files:
        out.append(f"refused CLI input wrote files: {len(files)} under {store.uri}/tenants/{tenant}, e.g. {files[0]}")
    return out


# --- The outbox: every state change has its event ------------------------------------------------


def check_event_chains(conn: Connection) -> list[str]:
    """Each row's retained events chain from one state to the next and end at its current state."""
    out = []
    rows = audit.current_states(conn)
    events: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for kind, key, old_stage, old_status, new_stage, new_status, event_id in audit.event_transitions(conn):
        events[(kind, key)].append((old_stage, old_status, new_stage, new_status, event_id))
    for kind, key, stage, status in rows:
        chain = events.get((kind, key), [])
        if not chain:
            continue  # all of its events pruned (older than the cutoff, read by the sensor)
        for before, after in zip(chain, chain[1:], strict=False):
            if (after[0], after[1]) != (before[2], before[3]):
                out.append(f"state change without its event: {kind} {key} went {before[2]}/{before[3]} "
                           f"(event {before[4]}) -> ... -> {after[0]}/{after[1]} (event {after[4]})")
                break
        last = chain[-1]
        if (last[2], last[3]) != (stage, status):
            out.append(f"state change without its event: {kind} {key} is {stage}/{status}, its last event "
                       f"{last[4]} says {last[2]}/{last[3]}")
    return out


# --- Stateful watches ------------------------------------------------------------------------------


@dataclass
class LostClaimWatch:
    """Attempts ``running`` whose partition lock is free: recovery must notice them within its
    period (``limit_s``), counted only while the daemon and the database have been up."""

    limit_s: float
    first_free: dict[int, float] = field(default_factory=dict)

    def check(self, conn: Connection, now: float, up_since: float) -> list[str]:
        from variant_pipeline.data.locks import lock_key

        held = audit.held_advisory_keys(conn)
        out, seen = [], set()
        for attempt_id, key, stage, run_id, worker in audit.running_attempts(conn):
            if lock_key(key) in held:
                continue
            seen.add(attempt_id)
            since = max(self.first_free.setdefault(attempt_id, now), up_since)
            if now - since > self.limit_s:
                out.append(f"attempt #{attempt_id} ({stage} of {key}, run {run_id}, worker {worker}) is running "
                           f"with its partition lock free for {now - since:.0f} s (recovery period {self.limit_s:.0f} s)")
        for gone in set(self.first_free) - seen:
            del self.first_free[gone]
        return out


@dataclass
class DuplicateRunWatch:
    """Two live pipeline runs (both STARTED, both run leases held) for one partition, seen in two
    consecutive checks."""

    last: set[frozenset[str]] = field(default_factory=set)

    def check(self, conn: Connection, instance: Any) -> list[str]:
        import dagster as dg

        from variant_pipeline.data.locks import run_lock_key

        runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        held = audit.held_advisory_keys(conn)
        by_partition: dict[str, list[str]] = defaultdict(list)
        for run in runs:
            partition = run.tags.get(PARTITION_TAG)
            if partition and run.job_name in PIPELINE_JOB_NAMES and run_lock_key(run.run_id) in held:
                by_partition[partition].append(run.run_id)
        now_pairs = {frozenset(ids) for ids in by_partition.values() if len(ids) > 1}
        out = [f"two live runs for one partition in two checks in a row: {sorted(p)}" for p in now_pairs & self.last]
        self.last = now_pairs
        return out


# --- Final checks (after the quiet period) ---------------------------------------------------------


def check_all_terminal(conn: Connection) -> list[str]:
    out = []
    for job_id, stage, status in audit.open_jobs(conn, LAST_JOB_STAGE):
        out.append(f"job not terminal after the quiet period: {job_id} at {stage}/{status}")
    for vid, job_id, stage, status in audit.open_variants(conn, LAST_VARIANT_STAGE):
        out.append(f"variant not terminal after the quiet period: {vid} (job {job_id}) at {stage}/{status}")
    return out


def check_no_running_attempts(conn: Connection) -> list[str]:
    return [f"attempt #{a} ({stage} of {key}, run {run}) still running after the quiet period"
            for a, key, stage, run, _worker in audit.running_attempts(conn)]


def check_failures_explained(conn: Connection, max_attempts: int) -> list[str]:
    """``failed`` only with a recorded input reason, a cancel, a job whose variants all failed, or
    an exhausted retry budget whose attempts are all recorded (in the failing stage's last round)."""
    out = []
    for level, key, job_id, stage, error in audit.failed_rows(conn):
        error = error or ""
        if error.startswith("StageInputError") or error.startswith("cancelled:"):
            continue
        if level == "job" and error.startswith("all ") and error.endswith(" variants failed"):
            n_failed = audit.failed_variant_count(conn, job_id)
            if n_failed[0] != n_failed[1] or n_failed[1] == 0:
                out.append(f"job {key} failed as '{error}' but {n_failed[0]} of {n_failed[1]} variants failed")
            continue
        last_round: list[Attempt] = []
        for a in load_attempts_at_stage(conn, key, level, stage):
            if a.outcome == "skipped":
                continue
            if a.attempt == 1:
                last_round = []
            last_round.append(a)
        numbers = [a.attempt for a in last_round]
        ended = all(a.outcome in ("failed", "lost") for a in last_round)
        if error.startswith("failed after "):
            try:
                n = int(error.split()[2])
            except (IndexError, ValueError):
                n = -1
            if numbers != list(range(1, n + 1)) or not ended or n != max_attempts:
                out.append(f"{level} {key} failed at {stage} with '{error[:120]}' but its last round of attempts "
                           f"is {[(a.attempt, a.outcome) for a in last_round]} (VP_MAX_ATTEMPTS {max_attempts})")
            continue
        if max_attempts == 1 and numbers == [1] and ended:
            continue
        out.append(f"{level} {key} failed at {stage} without a recorded reason or exhausted budget: '{error[:160]}' "
                   f"(attempts {[(a.attempt, a.outcome) for a in last_round]})")
    return out


def check_done_stages_committed(conn: Connection) -> list[str]:
    """A finished (done) variant or job has a committed attempt for every stage of its level from
    the first one it ran (an upstream system may have done the earlier ones)."""
    from variant_pipeline import stages as stage_graph

    out = []
    done = audit.finished_partitions(conn, LAST_VARIANT_STAGE, LAST_JOB_STAGE)
    attempts: dict[tuple[str, str], set[str]] = defaultdict(set)
    committed: dict[tuple[str, str], set[str]] = defaultdict(set)
    for a in load_attempts(conn):
        attempts[(a.level, a.partition)].add(a.stage)
        if a.outcome == "done":
            committed[(a.level, a.partition)].add(a.stage)
    for level, key in done:
        names = [s.name for s in stage_graph.STAGES if s.level == level]
        tried = [n for n in names if n in attempts[(level, key)]]
        if not tried:
            out.append(f"{level} {key} is done but no attempt of any stage is recorded")
            continue
        for name in names[names.index(tried[0]):]:
            if name not in committed[(level, key)]:
                out.append(f"{level} {key} is done but {name} has no committed attempt")
    return out


def check_outbox_read(conn: Connection, cursor: str | None) -> list[str]:
    from variant_pipeline.data.outbox import read_events_after

    unread, _ = read_events_after(conn, cursor, limit=50)
    if not unread:
        return []
    return [f"outbox event {e.id} ({e.level} {e.job_variants_id or e.job_id} {e.new_stage}/{e.new_status}, "
            f"origin {e.origin}) is past the outbox sensor's saved cursor {cursor}" for e in unread[:10]]


def check_partitions(conn: Connection, variant_keys: Iterable[str], job_keys: Iterable[str]) -> list[str]:
    """Every live variant and job has its Dagster dynamic partition; those whose partitions prune
    removed since they finished (by age or the partition budget) have none."""
    variants, jobs = set(variant_keys), set(job_keys)
    out = []
    for level, key, pruned in audit.partition_removal_marks(conn):
        known = key in (variants if level == "variant" else jobs)
        if pruned and known:
            out.append(f"{level} {key} was pruned but its Dagster partition is still there")
        elif not pruned and not known:
            out.append(f"{level} {key} is live but has no Dagster partition")
    return out


def check_orphan_files(conn: Connection, store: AssetStore, older_than: float) -> list[str]:
    """No file that no row names is older than ``older_than`` (a timestamp: the orphan rule's bound
    at the last prune, which removes such files)."""
    candidates = {f.relative_path: f.modified for f in store.files("tenants") if f.modified.timestamp() < older_than}
    if not candidates:
        return []
    named = audit.named_paths(conn, list(candidates))
    return [f"orphan file outlived the orphan rule: {rel} (modified {candidates[rel].isoformat(timespec='seconds')})"
            for rel in sorted(set(candidates) - named)]


def compare_results(conn: Connection, job_id: str, answer: Mapping[str, Any], store: AssetStore) -> list[str]:
    """``variant-pipeline results JOB --json`` against the rows."""
    out = []
    job = audit.job_result_row(conn, job_id)
    if (answer.get("stage"), answer.get("status"), answer.get("error")) != (job[0], job[1], job[2]):
        out.append(f"results {job_id}: job {answer.get('stage')}/{answer.get('status')} vs rows {job[0]}/{job[1]}")
    said = (answer.get("partitions_removed_at") is not None, answer.get("files_removed_at") is not None)
    if said != (job[4], job[5]):
        out.append(f"results {job_id}: says partitions/files removed {said} vs rows {(job[4], job[5])}")
    rows = {r[0]: r[1:] for r in audit.variant_result_rows(conn, job_id)}
    listed = {v["job_variants_id"]: v for v in answer.get("variants", [])}
    if set(listed) != set(rows):
        out.append(f"results {job_id}: variants {sorted(listed)} vs rows {sorted(rows)}")
    for vid, (stage, status, path) in rows.items():
        v = listed.get(vid)
        if v is None:
            continue
        if (v.get("stage"), v.get("status")) != (stage, status):
            out.append(f"results {job_id}: variant {vid} {v.get('stage')}/{v.get('status')} vs rows {stage}/{status}")
        expected = store.uri_for(path) if path else None
        if v.get("image_path") != expected:
            out.append(f"results {job_id}: variant {vid} image {v.get('image_path')} vs rows {expected}")
    feed = audit.instagram_feed(conn, job_id)
    if (answer.get("instagram_copy"), answer.get("hashtags")) != (feed or (None, [])):
        out.append(f"results {job_id}: Instagram copy or hashtags differ from instagram_feeds")
    return out


def check_expectations(conn: Connection, expectations: Mapping[str, str]) -> list[str]:
    """Rows the soak planted: ``bad`` variants end failed with a StageInputError; ``good`` ones
    (their siblings) are not failed by one."""
    out = []
    for vid, expect in expectations.items():
        row = audit.variant_state(conn, vid)
        if row is None:
            out.append(f"planted variant {vid} is gone")
            continue
        input_failure = row[1] == "failed" and (row[2] or "").startswith("StageInputError")
        if expect == "bad" and not input_failure:
            out.append(f"bad input variant {vid} ended {row[0]}/{row[1]} ({(row[2] or '')[:100]}), "
                       "not failed with a StageInputError")
        if expect == "good" and input_failure:
            out.append(f"sibling of a bad input, variant {vid}, failed with its input error: {row[2][:120]}")
    return out


def check_no_partial_jobs(conn: Connection) -> list[str]:
    """Every job has its inputs and its expected number of variants (bad input never leaves half a job)."""
    return [f"partial job {j}: inputs {'present' if has_inputs else 'missing'}, {n} of {expected} variants"
            for j, has_inputs, n, expected in audit.partial_jobs(conn)]
