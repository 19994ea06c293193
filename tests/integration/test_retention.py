"""Retention (variant-pipeline prune) against the real database, a PostgreSQL-backed Dagster
instance and real files: what is removed, what is kept, and what a busy job is spared."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from PIL import Image

from tests.fixtures.pipeline import submit_sample
from tests.fixtures.state import set_job_state, set_variant_state
from variant_pipeline import stages as stage_graph
from variant_pipeline.assets.partitions import job_partitions, variant_partitions
from variant_pipeline.assets.stage_assets import VARIANT_ASSETS
from variant_pipeline.cli import main
from variant_pipeline.config import SettingsError, load_settings
from variant_pipeline.data.engine import get_engine, transaction
from variant_pipeline.data.jobs import get_job_status
from variant_pipeline.data.locks import PartitionLock
from variant_pipeline.data.partition_state import attempts_of
from variant_pipeline.data.stage_outputs import replace_image_asset
from variant_pipeline.data.storage import AssetStore
from variant_pipeline.resources import default_resources
from variant_pipeline.sensors.retention import DagsterOrchestrator, prune_job, retention_schedules
from variant_pipeline.state.recovery import RetryError, request_retry
from variant_pipeline.state.retention import prune
from variant_pipeline.validation import InputError, parse_duration

# --- DURATION -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("45s", 45), ("90m", 5400), ("12h", 43200), ("30d", 30 * 86400), ("2w", 14 * 86400),
    ("1d12h", 129600), ("1.5h", 5400), (" 7D ", 7 * 86400),
])
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "d", "3x", "-1d", "0d", "1d 2h", "1e3s", "30 days"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(InputError, match="invalid duration"):
        parse_duration(text)


def test_cli_refuses_a_bad_duration_in_one_line_before_touching_anything(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("VARIANT_PIPELINE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["prune", "--older-than", "3 weeks"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid duration '3 weeks'") and err.count("\n") == 1
    assert not (tmp_path / "home").exists()  # no embedded server started, nothing written


# --- Jobs in every state ------------------------------------------------------------------------


def _finish(engine, job, status: str = "done", days_ago: float = 40) -> None:
    """Take a job to its end as the pipeline's writers do, then date its finish ``days_ago``."""
    with transaction(engine, "test:finish") as conn:
        for key in job.variant_ids:
            set_variant_state(conn, key, stage_graph.LAST_VARIANT_STAGE, "done")
    with transaction(engine, "test:finish") as conn:
        set_job_state(conn, job.job_id, stage_graph.LAST_JOB_STAGE, status)
        conn.execute(sa.text("UPDATE jobs SET finished_at = now() - make_interval(secs => :s) WHERE job_id = :j"),
                     {"s": days_ago * 86400, "j": str(job.job_id)})


def _add_images(engine, store: AssetStore, job) -> list[Path]:
    """One generated image per variant, saved and recorded as img_gen records it."""
    paths = []
    for key in job.variant_ids:
        stored = store.save_image("demo-cafe", "generated", Image.new("RGB", (32, 32), "red"))
        with transaction(engine) as conn:
            replace_image_asset(conn, stored, tenant_id="demo-cafe", job_id=str(job.job_id),
                                job_variants_id=str(key), image_type="generated")
        paths.append(Path(stored.uri))
    return paths


def _partitions(instance) -> tuple[set[str], set[str]]:
    return (set(instance.get_dynamic_partitions(variant_partitions.name)),
            set(instance.get_dynamic_partitions(job_partitions.name)))


def _register(instance, job) -> None:
    instance.add_dynamic_partitions(variant_partitions.name, [str(v) for v in job.variant_ids])
    instance.add_dynamic_partitions(job_partitions.name, [str(job.job_id)])


def _keys(job) -> set[str]:
    return {str(v) for v in job.variant_ids}


@pytest.fixture
def jobs(pipeline_env, dagster_instance):
    """old: done 40 days ago; old_failed: failed 40 days ago; recent: done now; running: mid-pipeline."""
    engine = get_engine(pipeline_env.app_url)
    store = AssetStore.from_settings(load_settings())
    made = {}
    for name in ("old", "old_failed", "recent", "running"):
        job = submit_sample(pipeline_env.app_url, variants=2)
        _register(dagster_instance, job)
        _add_images(engine, store, job)
        made[name] = job
    _finish(engine, made["old"])
    _finish(engine, made["old_failed"], status="failed")
    _finish(engine, made["recent"], days_ago=0)
    with transaction(engine, "test") as conn:
        set_variant_state(conn, made["running"].variant_ids[0], "vlm_analyze", "running")
    return engine, store, made


def _files_of(engine, job) -> list[str]:
    with engine.connect() as conn:
        return [p for (p,) in conn.execute(sa.text("SELECT path FROM image_assets WHERE job_id = :j"),
                                           {"j": str(job.job_id)})]


def test_prune_removes_old_partitions_and_files_keeps_rows_and_is_harmless_twice(jobs, dagster_instance) -> None:
    engine, store, made = jobs
    orchestrator = DagsterOrchestrator(dagster_instance)
    before = _partitions(dagster_instance)

    dry = prune(engine, orchestrator, store, timedelta(days=30), dry_run=True, orphan_min_age_s=0)
    assert {j.job_id for j in dry.jobs} == {str(made["old"].job_id), str(made["old_failed"].job_id)}
    assert _partitions(dagster_instance) == before  # a dry run changes nothing
    assert all(store.path_for(p).exists() for name in made for p in _files_of(engine, made[name]))

    report = prune(engine, orchestrator, store, timedelta(days=30), orphan_min_age_s=0)
    old = ("old", "old_failed")
    assert {j.job_id for j in report.jobs} == {str(made[n].job_id) for n in old}
    # Each old job: 2 variant partitions, 1 job partition, 3 files (2 generated, the product photo).
    assert [(j.variant_partitions, j.job_partitions, j.files) for j in report.jobs] == [(2, 1, 3), (2, 1, 3)]
    variants, job_keys = _partitions(dagster_instance)
    for name in old:
        assert not _keys(made[name]) & variants and str(made[name].job_id) not in job_keys
        assert not any(store.path_for(p).exists() for p in _files_of(engine, made[name]))
        # Rows stay: status still answers, and the job is marked pruned.
        assert get_job_status(engine, made[name].job_id).status in ("done", "failed")
    for name in ("recent", "running"):
        assert _keys(made[name]) <= variants and str(made[name].job_id) in job_keys
        assert all(store.path_for(p).exists() for p in _files_of(engine, made[name]))
    assert report.orphans == []  # every file left is named by a row

    again = prune(engine, orchestrator, store, timedelta(days=30), orphan_min_age_s=0)
    assert again.jobs == [] and again.busy == [] and again.orphans == []


def test_prune_rows_deletes_the_job_and_everything_hanging_off_it(jobs, dagster_instance) -> None:
    engine, store, made = jobs
    old = str(made["old"].job_id)
    with transaction(engine) as conn:  # an attempt and outputs of the kinds stages write
        conn.execute(sa.text("""INSERT INTO stage_attempts (level, job_id, job_variants_id, stage, attempt, origin,
                                                            outcome, finished_at)
                                VALUES ('variant', :j, :v, 'img_gen', 1, 'test', 'done', now())"""),
                     {"j": old, "v": str(made["old"].variant_ids[0])})
        conn.execute(sa.text("""INSERT INTO evaluations (job_id, job_variants_id, evaluation_type, metrics)
                                VALUES (:j, :v, 'iou', '{}')"""), {"j": old, "v": str(made["old"].variant_ids[0])})
    report = prune(engine, DagsterOrchestrator(dagster_instance), store, timedelta(days=30), rows=True)
    assert {j.job_id for j in report.jobs if j.rows_deleted} == {old, str(made["old_failed"].job_id)}
    with engine.connect() as conn:
        for table in ("jobs", "job_inputs", "jobs_variants", "image_assets", "stage_attempts", "evaluations"):
            left = conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE job_id = :j"), {"j": old}).scalar_one()
            assert left == 0, table
        kept = conn.execute(sa.text("SELECT count(*) FROM jobs_variants WHERE job_id = ANY(CAST(:j AS uuid[]))"),
                            {"j": [str(made[n].job_id) for n in ("recent", "running")]}).scalar_one()
    assert kept == 4
    # A job pruned earlier without --rows keeps its rows until a prune with --rows.
    assert prune(engine, DagsterOrchestrator(dagster_instance), store, timedelta(days=30), rows=True).jobs == []


def test_a_job_held_by_a_worker_or_a_retry_is_skipped_then_pruned_later(jobs, dagster_instance) -> None:
    engine, store, made = jobs
    orchestrator = DagsterOrchestrator(dagster_instance)
    old, old_failed = made["old"], made["old_failed"]
    lock = PartitionLock(engine, str(old.variant_ids[1]))  # a worker's partition lock
    assert lock.try_acquire()
    with engine.connect() as retry_conn, retry_conn.begin():
        # A retry's transaction holding the failed job's variant row (as request_retry does).
        retry_conn.execute(sa.text("SELECT 1 FROM jobs_variants WHERE job_variants_id = :k FOR UPDATE"),
                           {"k": str(old_failed.variant_ids[0])})
        report = prune(engine, orchestrator, store, timedelta(days=30))
    lock.release()
    assert report.jobs == [] and sorted(report.busy) == sorted([str(old.job_id), str(old_failed.job_id)])
    assert _keys(old) | _keys(old_failed) <= _partitions(dagster_instance)[0]

    later = prune(engine, orchestrator, store, timedelta(days=30))
    assert sorted(j.job_id for j in later.jobs) == sorted([str(old.job_id), str(old_failed.job_id)])


def test_a_reopened_job_is_not_pruned_and_a_run_in_flight_spares_its_job(jobs, dagster_instance) -> None:
    engine, store, made = jobs
    orchestrator = DagsterOrchestrator(dagster_instance)
    old, old_failed = made["old"], made["old_failed"]
    request_retry(engine, str(old.job_id), from_stage="overlay")  # reopened: queued again
    dagster_instance.add_run(dg.DagsterRun(  # a run still going for one of the failed job's variants
        job_name="variant_pipeline", run_id="started-run-1", status=dg.DagsterRunStatus.STARTED,
        tags={"dagster/partition": str(old_failed.variant_ids[0])}))
    report = prune(engine, orchestrator, store, timedelta(days=30))
    assert report.jobs == [] and report.busy == [str(old_failed.job_id)]
    assert _keys(old) | _keys(old_failed) <= _partitions(dagster_instance)[0]
    assert get_job_status(engine, old.job_id).finished_at is None  # reopened, not finished


def test_a_pruned_job_is_refused_by_retry_so_no_variant_comes_back_without_its_partition(
        pipeline_env, dagster_instance, capsys) -> None:
    """Found by the soak (seed 35746): ``retry`` of one failed variant of a job that prune had
    already handled reopened the job; the outbox sensor added back only that variant's
    partition, so its failed sibling was live again without one (and the job's files were gone,
    so no stage could have run anyway). A pruned job is now refused, rows and partitions as they were."""
    engine = get_engine(pipeline_env.app_url)
    store = AssetStore.from_settings(load_settings())
    job = submit_sample(pipeline_env.app_url, variants=2)
    _register(dagster_instance, job)
    _add_images(engine, store, job)
    with transaction(engine, "test") as conn:  # both variants failed for their input; the job with them
        for key in job.variant_ids:
            set_variant_state(conn, key, "img_gen", "failed", error="copy is over its limit")
        conn.execute(sa.text("UPDATE jobs SET finished_at = now() - interval '40 days' WHERE job_id = :j"),
                     {"j": str(job.job_id)})
    assert get_job_status(engine, job.job_id).status == "failed"
    report = prune(engine, DagsterOrchestrator(dagster_instance), store, timedelta(days=30))
    assert [j.job_id for j in report.jobs] == [str(job.job_id)]

    def states() -> list[tuple]:
        with engine.connect() as conn:
            return conn.execute(sa.text(
                """SELECT v.job_variants_id::text, v.current_step, v.status, j.status, j.finished_at, j.pruned_at
                     FROM jobs_variants v JOIN jobs j USING (job_id) WHERE j.job_id = :j ORDER BY 1"""),
                {"j": str(job.job_id)}).all()

    before = states()
    for target in (str(job.variant_ids[0]), str(job.job_id)):
        with pytest.raises(RetryError, match=f"job {job.job_id} was pruned at .*submit it again"):
            request_retry(engine, target)
        assert main(["retry", target]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: job ") and "was pruned" in err and "\n" not in err
    with pytest.raises(RetryError, match="was pruned"):
        request_retry(engine, str(job.job_id), from_stage="img_gen")
    assert states() == before  # nothing reopened
    variants, job_keys = _partitions(dagster_instance)
    assert not _keys(job) & variants and str(job.job_id) not in job_keys


def test_orphan_file_of_a_timed_out_attempt_is_removed_and_live_files_stay(pipeline_env, dagster_instance,
                                                                            monkeypatch) -> None:
    """A real failed attempt: img_gen times out (its work thread was held by a sleep drill), the
    abandoned thread still generates and saves its image, which no row will ever name. The retry
    writes its own image. prune removes the first and keeps the second (and the product photo)."""
    engine = get_engine(pipeline_env.app_url)
    store = AssetStore.from_settings(load_settings())
    job = submit_sample(pipeline_env.app_url, variants=1)
    key = str(job.variant_ids[0])
    _register(dagster_instance, job)
    generated = store.path_for("tenants/demo-cafe/generated")

    monkeypatch.setenv("VP_FAULTS", "img_gen:sleep=3:attempt=1")
    monkeypatch.setenv("VP_STAGE_TIMEOUTS", "img_gen=1")
    failed = dg.materialize(VARIANT_ASSETS[:1], partition_key=key, instance=dagster_instance,
                            resources=default_resources(), raise_on_error=False)
    assert not failed.success
    deadline = time.monotonic() + 60
    while not list(generated.rglob("*.png")):  # the abandoned attempt's late image
        assert time.monotonic() < deadline, "the timed-out attempt never wrote its image"
        time.sleep(0.2)
    [orphan] = list(generated.rglob("*.png"))
    attempts = attempts_of(engine, key)
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "failed")]

    monkeypatch.delenv("VP_FAULTS")
    monkeypatch.delenv("VP_STAGE_TIMEOUTS")
    assert dg.materialize(VARIANT_ASSETS[:1], partition_key=key, instance=dagster_instance,
                          resources=default_resources()).success
    live = {store.path_for(p) for p in _files_of(engine, job)}
    assert orphan not in live and len(live) == 2  # the retry's image and the product photo

    orchestrator = DagsterOrchestrator(dagster_instance)
    # The late image can be younger than the 1 s cutoff below: let it pass it, so each "kept" below
    # is kept for the reason it names.
    while time.time() - orphan.stat().st_mtime < 1.5:
        time.sleep(0.1)
    # Younger than the age guard: kept.
    assert prune(engine, orchestrator, store, timedelta(seconds=1), orphan_min_age_s=3600).orphans == []
    assert orphan.exists()
    # An attempt running on another variant that started before the file was written: kept too.
    other = submit_sample(pipeline_env.app_url, variants=1)
    with engine.begin() as conn:
        conn.execute(sa.text("""INSERT INTO stage_attempts (level, job_id, job_variants_id, stage, attempt, origin,
                                                            started_at)
                                VALUES ('variant', :j, :v, 'img_gen', 1, 'test', now() - interval '1 hour')"""),
                     {"j": str(other.job_id), "v": str(other.variant_ids[0])})
    assert prune(engine, orchestrator, store, timedelta(seconds=1), orphan_min_age_s=0).orphans == []
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE stage_attempts SET outcome = 'lost', finished_at = now() WHERE origin = 'test'"))

    report = prune(engine, orchestrator, store, timedelta(seconds=1), orphan_min_age_s=0)
    assert [store.path_for(p) for p in report.orphans] == [orphan]
    assert not orphan.exists() and all(p.exists() for p in live)
    assert report.jobs == []  # the job itself is not finished: its partition and files stay
    assert {key} <= _partitions(dagster_instance)[0]


def test_the_daily_schedule_exists_only_when_set_and_its_run_prunes(jobs, dagster_instance, monkeypatch) -> None:
    engine, store, made = jobs
    monkeypatch.delenv("VP_PRUNE_OLDER_THAN", raising=False)
    monkeypatch.setenv("VP_PARTITION_BUDGET", "0")
    assert retention_schedules() == []  # neither an age nor a budget: off
    monkeypatch.delenv("VP_PARTITION_BUDGET")
    [schedule] = retention_schedules()  # the partition budget is on by default, and so the schedule
    assert load_settings().partition_budget == 10_000
    monkeypatch.setenv("VP_PRUNE_OLDER_THAN", "30d")
    [schedule] = retention_schedules()
    assert (schedule.name, schedule.cron_schedule) == ("prune_schedule", "0 3 * * *")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    # What the schedule launches, run in-process: the same prune with the settings.
    assert prune_job.execute_in_process(instance=dagster_instance, resources=default_resources()).success
    variants, _jobs = _partitions(dagster_instance)
    assert not (_keys(made["old"]) | _keys(made["old_failed"])) & variants
    assert _keys(made["recent"]) | _keys(made["running"]) <= variants
    monkeypatch.setenv("VP_PRUNE_OLDER_THAN", "soon")
    with pytest.raises(SettingsError, match="VP_PRUNE_OLDER_THAN"):
        load_settings()


# --- The partition budget -----------------------------------------------------------------------


def _add_runs(instance, job) -> dict[str, str]:
    """A finished Dagster run, with an event, for each of the job's partitions: partition -> run id."""
    import uuid

    runs = {}
    for key in [*_keys(job), str(job.job_id)]:
        run = instance.add_run(dg.DagsterRun(job_name="variant_pipeline", run_id=str(uuid.uuid4()),
                                          status=dg.DagsterRunStatus.SUCCESS, tags={"dagster/partition": key}))
        instance.report_engine_event("stage done", run)
        runs[key] = run.run_id
    return runs


def _runs_of(instance, job) -> list[str]:
    return list(instance.get_run_ids(dg.RunsFilter(tags={"dagster/partition": [*_keys(job), str(job.job_id)]})))


def _removed_and_pruned(engine, job) -> tuple[bool, bool]:
    status = get_job_status(engine, job.job_id)
    return status.partitions_removed_at is not None, status.pruned_at is not None


def test_the_budget_removes_the_oldest_finished_jobs_partitions_only_and_never_a_live_one(
        jobs, dagster_instance, capsys, tmp_path) -> None:
    engine, store, made = jobs
    with engine.begin() as conn:  # old_failed finished first, then old, then recent; running never
        conn.execute(sa.text("UPDATE jobs SET finished_at = now() - interval '50 days' WHERE job_id = :j"),
                     {"j": str(made["old_failed"].job_id)})
    orchestrator = DagsterOrchestrator(dagster_instance)
    before = _partitions(dagster_instance)
    assert len(before[0]) == 8  # 4 jobs of 2 variants

    runs = {name: _add_runs(dagster_instance, job) for name, job in made.items()}

    dry = prune(engine, orchestrator, store, None, dry_run=True, partition_budget=6)
    assert [(j.job_id, j.reason, j.variant_partitions, j.job_partitions, j.files, j.runs) for j in dry.jobs] == [
        (str(made["old_failed"].job_id), "budget", 2, 1, 0, 3)]
    lines = "\n".join(dry.lines())
    assert "would remove 2 variant and 1 job partitions and 3 Dagster runs to keep the partition budget" in lines
    assert len(_runs_of(dagster_instance, made["old_failed"])) == 3
    assert "partition budget 6: 8 live variant partitions; would remove 2" in lines
    assert _partitions(dagster_instance) == before  # a dry run changes nothing
    assert _removed_and_pruned(engine, made["old_failed"]) == (False, False)

    report = prune(engine, DagsterOrchestrator(dagster_instance), store, None, partition_budget=5)
    assert [j.job_id for j in report.jobs] == [str(made[n].job_id) for n in ("old_failed", "old")]
    assert report.budget.over == 0 and report.events == 0 and report.orphans == []
    variants, job_keys = _partitions(dagster_instance)
    assert variants == _keys(made["recent"]) | _keys(made["running"])
    assert job_keys == {str(made[n].job_id) for n in ("recent", "running")}
    for name in ("old_failed", "old"):
        # What Dagster keeps goes: the partitions, and their runs with their event records.
        assert _runs_of(dagster_instance, made[name]) == []
        assert all(dagster_instance.all_logs(run_id) == [] for run_id in runs[name].values())
        # Our rows and files stay, and the job is marked as such (not pruned).
        assert _removed_and_pruned(engine, made[name]) == (True, False)
        assert all(store.path_for(p).exists() for p in _files_of(engine, made[name]))
    for name in ("recent", "running"):
        assert sorted(_runs_of(dagster_instance, made[name])) == sorted(runs[name].values())
        assert all(dagster_instance.all_logs(run_id) for run_id in runs[name].values())

    # Asked to go down to 1, it removes the finished job's partitions but never the running one's.
    tight = prune(engine, DagsterOrchestrator(dagster_instance), store, None, partition_budget=1)
    assert [j.job_id for j in tight.jobs] == [str(made["recent"].job_id)] and tight.budget.over == 1
    assert "partition budget: still 1 over" in "\n".join(tight.lines())
    assert _partitions(dagster_instance)[0] == _keys(made["running"])

    # status, results and the gallery still answer for such a job, and say what was removed.
    old = str(made["old"].job_id)
    assert main(["status", old]) == 0
    assert "Dagster partitions removed" in capsys.readouterr().out
    assert main(["results", old, "--json", "--html", str(tmp_path / "g.html")]) == 0
    contract = json.loads(capsys.readouterr().out)
    assert contract["state"] == "done" and contract["partitions_removed_at"] and contract["files_removed_at"] is None
    assert all(v["image_path"] is None or Path(v["image_path"]).exists() for v in contract["variants"])
    assert "to keep the partition budget" in (tmp_path / "g.html").read_text(encoding="utf-8")
    # A retry would bring back one variant's partition without its siblings': refused in one line.
    with pytest.raises(RetryError, match="partitions were removed at .* to keep the partition budget"):
        request_retry(engine, str(made["old_failed"].job_id))

    # The age rule later removes such a job's files as for any other, and marks it pruned
    # (keeping the time the budget removed its partitions).
    removed_by_budget = get_job_status(engine, made["old"].job_id).partitions_removed_at
    aged = prune(engine, DagsterOrchestrator(dagster_instance), store, timedelta(days=30), orphan_min_age_s=0)
    assert sorted((j.job_id, j.variant_partitions, j.files) for j in aged.jobs) == sorted(
        (str(made[n].job_id), 0, 3) for n in ("old_failed", "old"))
    assert _removed_and_pruned(engine, made["old"]) == (True, True)
    assert get_job_status(engine, made["old"].job_id).partitions_removed_at == removed_by_budget
    assert not any(store.path_for(p).exists() for p in _files_of(engine, made["old"]))


def test_a_finished_job_in_use_is_skipped_by_the_budget(jobs, dagster_instance) -> None:
    engine, store, made = jobs
    dagster_instance.add_run(dg.DagsterRun(  # a hand run still going for one of the old job's variants
        job_name="variant_pipeline", run_id="started-run-2", status=dg.DagsterRunStatus.STARTED,
        tags={"dagster/partition": str(made["old"].variant_ids[0])}))
    report = prune(engine, DagsterOrchestrator(dagster_instance), store, None, partition_budget=4)
    assert report.busy == [str(made["old"].job_id)]
    assert [j.job_id for j in report.jobs] == [str(made["old_failed"].job_id), str(made["recent"].job_id)]
    assert _keys(made["old"]) <= _partitions(dagster_instance)[0] and report.budget.over == 0


def test_the_budget_through_the_cli_and_the_schedule_and_bad_values_in_one_line(
        jobs, dagster_instance, pipeline_env, monkeypatch, capsys, tmp_path) -> None:
    engine, store, made = jobs
    home = tmp_path / "dagster-home"  # the CLI's instance: the same storage as the fixture's
    home.mkdir()
    (home / "dagster.yaml").write_text(
        f"storage:\n  postgres:\n    postgres_url: {pipeline_env.dagster_url}\n", encoding="utf-8")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for argv, env, message in [
        (["prune", "--budget", "lots"], None, "expected a whole number, 0 or more, got 'lots'"),
        (["prune", "--budget", "0"], None, "nothing to prune by: give --older-than"),
        (["prune", "--rows"], None, "--rows needs --older-than"),
        (["prune", "--dry-run"], "-3", "VP_PARTITION_BUDGET must be a whole number of live variant partitions"),
    ]:
        if env is not None:
            monkeypatch.setenv("VP_PARTITION_BUDGET", env)
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err
    monkeypatch.setenv("VP_PARTITION_BUDGET", "6")
    before = _partitions(dagster_instance)
    assert main(["prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "partition budget 6: 8 live variant partitions; would remove 2" in out and "no age rule" in out
    assert _partitions(dagster_instance) == before
    # The schedule's run keeps the budget from the settings.
    monkeypatch.delenv("VP_PRUNE_OLDER_THAN", raising=False)
    assert prune_job.execute_in_process(instance=dagster_instance, resources=default_resources()).success
    assert len(_partitions(dagster_instance)[0]) == 6
