"""The recovery sensor's tick and the hand-started path, in process, against real PostgreSQL and a
PostgreSQL-backed Dagster instance. (Killed workers and dead runs are in tests/e2e/test_faults.py.)"""

from __future__ import annotations

import uuid
from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from tests.fixtures.pipeline import submit_sample
from tests.fixtures.state import set_job_state, set_variant_state
from variant_pipeline.assets.jobs import (
    CONTINUES_ATTEMPTS_TAG,
    LAUNCHED_BY_TAG,
    PRIORITY_TAG,
    RECOVERY_REASON_TAG,
    RESUMED_WORK_PRIORITY,
    START_STAGE_TAG,
)
from variant_pipeline.assets.partitions import variant_partitions
from variant_pipeline.assets.stage_assets import VARIANT_ASSETS
from variant_pipeline.data import partition_state
from variant_pipeline.data.engine import get_engine, transaction
from variant_pipeline.data.jobs import get_job_status
from variant_pipeline.resources import DatabaseResource, default_resources
from variant_pipeline.sensors.recovery import build_recovery_sensor
from variant_pipeline.state import claims


def _tick(instance) -> dg.SensorResult | dg.SkipReason:
    sensor = build_recovery_sensor()
    # As the daemon does: the sensor's resources (only those it names), set up for the tick.
    with dg.build_sensor_context(instance=instance, resources={"database": DatabaseResource()}) as context:
        return sensor(context)


def _clock_ahead(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Recovery's clock (the database's ``now()``, which it reads through the data layer) runs ahead."""
    read = partition_state.database_now
    monkeypatch.setattr(partition_state, "database_now", lambda conn: read(conn) + timedelta(seconds=seconds))


def test_a_job_whose_variants_finished_but_whose_job_stages_never_started_is_restarted_once(
        pipeline_env, dagster_instance, monkeypatch) -> None:
    monkeypatch.setenv("VP_STALL_AFTER_S", "0.5")
    engine = get_engine(pipeline_env.app_url)
    job = submit_sample(pipeline_env.app_url, variants=1)
    with transaction(engine, "external") as conn:
        set_variant_state(conn, job.variant_ids[0], "iou_eval", "done")  # the rollup: job (iou_eval, done)
    assert (get_job_status(engine, job.job_id).stage, get_job_status(engine, job.job_id).status) == (
        "iou_eval", "done")
    _clock_ahead(monkeypatch, seconds=1)  # past the 0.5 s stall rule, without waiting for it
    first = _tick(dagster_instance)
    assert isinstance(first, dg.SensorResult)
    [request] = first.run_requests
    assert request.partition_key == str(job.job_id) and request.job_name == "job_pipeline"
    assert request.tags[START_STAGE_TAG] == "ad_copy_gen_kor"
    assert request.tags[LAUNCHED_BY_TAG] == "recovery_sensor" and request.tags[RECOVERY_REASON_TAG] == "stalled"
    # Resumed work goes ahead of new work in Dagster's run queue.
    assert int(request.tags[PRIORITY_TAG]) == int(RESUMED_WORK_PRIORITY) > 0
    assert CONTINUES_ATTEMPTS_TAG not in request.tags
    assert request.asset_selection is None  # from the job level's first stage: the whole job_pipeline
    # Nothing changed: the next tick asks for the same run key, which Dagster launches only once.
    again = _tick(dagster_instance)
    assert [r.run_key for r in again.run_requests] == [request.run_key]


def test_nothing_to_recover_is_a_skip(pipeline_env, dagster_instance) -> None:
    submit_sample(pipeline_env.app_url, variants=1)  # queued moments ago: not stalled
    assert isinstance(_tick(dagster_instance), dg.SkipReason)


def test_materializing_a_failed_stage_by_hand_is_a_new_recorded_round_and_reopens_its_job(
        pipeline_env, dagster_instance) -> None:
    engine = get_engine(pipeline_env.app_url)
    job = submit_sample(pipeline_env.app_url, variants=1)
    key = str(job.variant_ids[0])
    dagster_instance.add_dynamic_partitions(variant_partitions.name, [key])
    result = dg.materialize(VARIANT_ASSETS, partition_key=key, instance=dagster_instance,
                            resources=default_resources(), selection=["img_gen"])
    assert result.success
    # Another system fails the variant at vlm_analyze, and the job went on to its job stages.
    with transaction(engine, "external") as conn:
        set_variant_state(conn, key, "vlm_analyze", "failed", error="external failure")
        set_job_state(conn, job.job_id, "instagram_feed_gen", "done")

    result = dg.materialize(VARIANT_ASSETS, partition_key=key, instance=dagster_instance,
                            resources=default_resources(), selection=["vlm_analyze"])
    assert result.success
    attempts = [a for a in partition_state.attempts_of(engine, key) if a["stage"] == "vlm_analyze"]
    assert [(a["attempt"], a["outcome"], a["run_id"]) for a in attempts] == [(1, "done", result.run_id)]
    with engine.connect() as conn:
        job_state = conn.execute(sa.text("SELECT current_step, status FROM jobs WHERE job_id = :j"),
                                 {"j": str(job.job_id)}).one()
    # Back in its variant phase (the least advanced variant stage), so its job stages run again
    # when the variant finishes.
    assert tuple(job_state) == ("vlm_analyze", "running")


def test_a_partition_whose_run_a_person_cancelled_is_failed_not_restarted(
        pipeline_env, dagster_instance, monkeypatch) -> None:
    monkeypatch.setenv("VP_STALL_AFTER_S", "0.5")
    engine = get_engine(pipeline_env.app_url)
    job = submit_sample(pipeline_env.app_url, variants=1)
    key = str(job.variant_ids[0])
    with transaction(engine, "external") as conn:
        set_variant_state(conn, key, "planner", "done")
    # Its run (waiting for a pool slot, say) was cancelled before overlay began.
    cancelled = dg.DagsterRun(job_name="variant_pipeline", run_id="c0ffee00-0000-4000-8000-000000000001",
                              status=dg.DagsterRunStatus.CANCELED, tags={"dagster/partition": key})
    dagster_instance.add_run(cancelled)
    _clock_ahead(monkeypatch, seconds=1)  # past the 0.5 s stall rule, without waiting for it

    result = _tick(dagster_instance)
    assert isinstance(result, dg.SensorResult) and result.run_requests == []
    status = get_job_status(engine, job.job_id)
    assert (status.variants[0].stage, status.variants[0].status) == ("overlay", "failed")
    assert status.variants[0].error == (f"cancelled: run {cancelled.run_id} was cancelled in Dagster "
                                        "before overlay started")
    assert (status.stage, status.status) == ("iou_eval", "failed")  # the job rolls up: nothing left to run


def test_a_lost_worker_is_retried_in_the_tick_that_finds_it_without_the_backoff(
        pipeline_env, dagster_instance, monkeypatch) -> None:
    """A lost attempt says nothing about its stage (the worker was killed or frozen, its server
    restarted): the tick that records it restarts it. The backoff is for stages that failed."""
    monkeypatch.setenv("VP_RETRY_BACKOFF_S", "10")  # the default, stated: the retry must not wait for it
    engine = get_engine(pipeline_env.app_url)
    job = submit_sample(pipeline_env.app_url, variants=1)
    key = str(job.variant_ids[0])
    with transaction(engine, "external") as conn:
        set_variant_state(conn, key, "vlm_analyze", "running")  # claimed, and nobody holds its lock now
    result = _tick(dagster_instance)
    assert isinstance(result, dg.SensorResult)
    [request] = result.run_requests
    assert request.partition_key == key and request.tags[RECOVERY_REASON_TAG] == "retry"
    assert request.tags[START_STAGE_TAG] == "vlm_analyze" and request.tags[CONTINUES_ATTEMPTS_TAG] == "1"
    with engine.connect() as conn:
        status, error = conn.execute(sa.text("SELECT status, error FROM jobs_variants WHERE job_variants_id = :k"),
                                     {"k": key}).one()
    assert status == "queued" and error.startswith("attempt 1 of 3 failed: worker lost")
    assert error.endswith("(retrying now)")


def _started_run(instance: dg.DagsterInstance, partition_key: str) -> dg.DagsterRun:
    """A run Dagster calls STARTED, started now, whose worker holds no lease."""
    run = instance.add_run(dg.DagsterRun(
        job_name="variant_pipeline", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.NOT_STARTED,
        tags={"dagster/partition": partition_key}))
    instance.report_dagster_event(dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name),
                                  run.run_id)
    return run


def test_a_young_run_whose_worker_died_after_claiming_a_stage_is_failed_and_its_partition_retried_at_once(
        pipeline_env, dagster_instance) -> None:
    """Found by the soak: a worker killed within its run's first minute (the lease grace) left
    the run STARTED for the rest of that minute, and its partition busy, though the lost attempt
    was due again at once. A run that claimed a stage had its lease: a free lease means it died."""
    engine = get_engine(pipeline_env.app_url)
    job = submit_sample(pipeline_env.app_url, variants=1)
    key = str(job.variant_ids[0])
    run = _started_run(dagster_instance, key)
    with transaction(engine, "run:test") as conn:  # the worker claimed img_gen, then was SIGKILLed
        claims.claim(conn, stage="img_gen", partition_key=key, run_id=run.run_id, origin="run:test",
                     continues_attempts=False)
    # A young run that has not claimed anything yet keeps the grace: its lease may be on its way.
    waiting = _started_run(dagster_instance, str(uuid.uuid4()))
    # Nor is one whose stages all ended: it gave its lease back at teardown, a moment before it
    # records RUN_SUCCESS (the CI run of the first fix failed a finishing run that way).
    other = submit_sample(pipeline_env.app_url, variants=1)
    finishing = _started_run(dagster_instance, str(other.variant_ids[0]))
    with transaction(engine, "run:test") as conn:
        done = claims.claim(conn, stage="img_gen", partition_key=str(other.variant_ids[0]),
                            run_id=finishing.run_id, origin="run:test", continues_attempts=False)
        conn.execute(sa.text("UPDATE stage_attempts SET outcome = 'done', finished_at = now() "
                             "WHERE attempt_id = :a"), {"a": done.attempt_id})

    result = _tick(dagster_instance)  # the default 60 s grace, and the runs seconds old
    assert dagster_instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert dagster_instance.get_run_by_id(waiting.run_id).status == dg.DagsterRunStatus.STARTED
    assert dagster_instance.get_run_by_id(finishing.run_id).status == dg.DagsterRunStatus.STARTED
    assert isinstance(result, dg.SensorResult)
    [request] = result.run_requests  # in the same tick: the lost attempt's retry
    assert request.partition_key == key and request.tags[RECOVERY_REASON_TAG] == "retry"
    assert request.tags[START_STAGE_TAG] == "img_gen"


def test_a_due_retry_is_launched_once_and_names_the_failed_run(pipeline_env, dagster_instance, tmp_path) -> None:
    from variant_pipeline.assets.jobs import RETRIES_RUN_TAG
    from variant_pipeline.config import load_settings
    from variant_pipeline.data.storage import AssetStore
    from variant_pipeline.handlers import HandlerContext, execute_stage
    from variant_pipeline.state.attempts import StageFailed

    engine = get_engine(pipeline_env.app_url)
    job = submit_sample(pipeline_env.app_url, variants=1)
    key = str(job.variant_ids[0])
    settings = load_settings().model_copy(update={"faults": "img_gen:raise", "retry_backoff_s": 0})
    ctx = HandlerContext(engine=engine, store=AssetStore(tmp_path), settings=settings, models=None,  # type: ignore[arg-type]
                         origin="dagster-run:failed-run-1", partition_key=key, log=lambda _m: None,
                         run_id="failed-run-1")
    with pytest.raises(StageFailed) as failure:
        execute_stage("img_gen", ctx)
    assert failure.value.will_retry

    result = _tick(dagster_instance)
    [request] = result.run_requests
    assert request.tags[RETRIES_RUN_TAG] == "failed-run-1"
    assert request.tags[CONTINUES_ATTEMPTS_TAG] == "1" and request.tags[RECOVERY_REASON_TAG] == "retry"
    assert request.tags[PRIORITY_TAG] == RESUMED_WORK_PRIORITY
    assert request.tags[START_STAGE_TAG] == "img_gen" and request.partition_key == key
    assert [r.run_key for r in _tick(dagster_instance).run_requests] == [request.run_key]


def test_a_run_that_ended_holding_a_pool_slot_gives_it_back_on_the_next_tick(pipeline_env, dagster_instance) -> None:
    """Found by the soak: a worker SIGKILLed inside a `gpu` stage is failed by Dagster's run
    monitoring before the recovery sensor sees it STARTED, so its slot waited for
    `free_slots_after_run_end_seconds` while every other model stage queued behind it."""
    storage = dagster_instance.event_log_storage
    storage.set_concurrency_slots("gpu", 1)
    dead = dg.DagsterRun(job_name="variant_pipeline", run_id="0d1e2a3d-0000-4000-8000-00000000dead",
                         status=dg.DagsterRunStatus.FAILURE)
    alive = dg.DagsterRun(job_name="variant_pipeline", run_id="0d1e2a3d-0000-4000-8000-0000000a11fe",
                          status=dg.DagsterRunStatus.STARTED)
    dagster_instance.add_run(dead)
    dagster_instance.add_run(alive)
    assert storage.claim_concurrency_slot("gpu", dead.run_id, "img_gen").is_claimed
    assert not storage.claim_concurrency_slot("gpu", alive.run_id, "img_gen").is_claimed  # waits behind it

    _tick(dagster_instance)
    assert storage.get_concurrency_info("gpu").active_run_ids == set()  # the ended run's slot is free
    assert storage.claim_concurrency_slot("gpu", alive.run_id, "img_gen").is_claimed
    _tick(dagster_instance)
    assert storage.get_concurrency_info("gpu").active_run_ids == {alive.run_id}  # a live run keeps its slot
