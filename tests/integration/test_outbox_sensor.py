"""The outbox sensor: what a batch of events asks for, and a real tick against PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa

from tests.fixtures.db import create_job
from variant_pipeline import stages as stage_graph
from variant_pipeline.assets.jobs import EVENT_TAG, LAUNCHED_BY_TAG, PRIORITY_TAG
from variant_pipeline.data.engine import get_engine, transaction
from variant_pipeline.data.outbox import Event
from variant_pipeline.sensors.outbox import plan_tick
from variant_pipeline.stages import Level
from variant_pipeline.state.transitions import start_stage_for

JOB = uuid.uuid4()
VARIANT = uuid.uuid4()


def event(event_id: int, stage: str, status: str, *, kind: str = "variant", origin: str = "external",
          variant: uuid.UUID | None = VARIANT, job: uuid.UUID = JOB) -> Event:
    return Event(
        id=event_id, xid=1000 + event_id, created_at=datetime.now(UTC), level=Level(kind),
        job_variants_id=variant if kind == "variant" else None, job_id=job, tenant_id="t",
        old_stage=None, old_status=None, new_stage=stage, new_status=status, error=None, origin=origin,
    )


def test_start_stage_follows_the_stage_graph() -> None:
    assert start_stage_for(event(1, "img_gen", "queued")) == "img_gen"
    assert start_stage_for(event(1, "img_gen", "done")) == "vlm_analyze"
    assert start_stage_for(event(1, "planner", "done")) == "overlay"
    assert start_stage_for(event(1, "overlay", "queued")) == "overlay"
    assert start_stage_for(event(1, "iou_eval", "done")) is None  # variants end there
    assert start_stage_for(event(1, "overlay", "running")) is None
    assert start_stage_for(event(1, "overlay", "failed")) is None
    assert start_stage_for(event(1, "iou_eval", "done", kind="job")) == "ad_copy_gen_kor"
    assert start_stage_for(event(1, "ad_copy_gen_kor", "done", kind="job")) == "instagram_feed_gen"
    assert start_stage_for(event(1, "instagram_feed_gen", "done", kind="job")) is None


def test_new_variant_gets_a_partition_and_one_run_through_every_stage() -> None:
    plan = plan_tick([event(7, "img_gen", "queued")], known_variant_keys=[], known_job_keys=[])
    assert plan.new_variant_keys == [str(VARIANT)]
    assert plan.new_job_keys == [str(JOB)]
    [run] = plan.runs
    assert (run.level, run.partition_key, run.start_stage) == ("variant", str(VARIANT), "img_gen")
    assert run.asset_selection is None  # the whole variant job: every variant stage, no subset
    assert "event:7" in run.run_key


def test_pipeline_own_done_writes_never_start_a_run() -> None:
    own = "dagster-run:4b8c0d5e"
    events = [event(i, s.name, "done", origin=own) for i, s in enumerate(stage_graph.VARIANT_STAGES, 1)]
    plan = plan_tick(events, known_variant_keys=[str(VARIANT)], known_job_keys=[str(JOB)])
    assert plan.runs == []
    assert plan.new_variant_keys == [] and plan.new_job_keys == []


def test_external_img_gen_done_runs_the_rest_from_vlm_analyze() -> None:
    plan = plan_tick([event(3, "img_gen", "done")], known_variant_keys=[], known_job_keys=[])
    [run] = plan.runs
    assert run.start_stage == "vlm_analyze"
    assert "img_gen" not in [k.to_user_string() for k in run.asset_selection]


def test_only_the_latest_event_of_a_partition_counts() -> None:
    plan = plan_tick([event(1, "img_gen", "queued"), event(2, "img_gen", "done")], [], [])
    [run] = plan.runs
    assert (run.start_stage, run.event_id) == ("vlm_analyze", 2)


def test_job_rollup_written_inside_a_pipeline_run_still_starts_the_job_stages() -> None:
    rollup = event(9, "iou_eval", "done", kind="job", origin="dagster-run:abc", variant=None)
    plan = plan_tick([rollup], known_variant_keys=[], known_job_keys=[str(JOB)])
    [run] = plan.runs
    assert (run.level, run.partition_key, run.start_stage) == ("job", str(JOB), "ad_copy_gen_kor")
    # ...but the job stages' own progress does not start more runs.
    own = event(10, "ad_copy_gen_kor", "done", kind="job", origin="dagster-run:def", variant=None)
    assert plan_tick([own], [], [str(JOB)]).runs == []


def test_failed_rollup_starts_nothing() -> None:
    failed = event(4, "iou_eval", "failed", kind="job", variant=None)
    assert plan_tick([failed], [], []).runs == []


def _sensor_tick(instance: dg.DagsterInstance, cursor: str | None):
    from variant_pipeline.definitions import defs

    sensor = defs.resolve_sensor_def("outbox_sensor")
    # The daemon hands a sensor its resources (set up for the tick) from the definitions.
    with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                 definitions=defs, resources=defs.resources) as context:
        return sensor.evaluate_tick(context)


def test_sensor_tick_adds_partitions_and_requests_one_run_per_new_variant(pipeline_env, dagster_instance,
                                                                            monkeypatch) -> None:
    monkeypatch.setenv("VP_SENSOR_LISTEN_S", "0.2")
    engine = get_engine(pipeline_env.app_url)
    job = create_job(engine, variants=3)

    data = _sensor_tick(dagster_instance, None)
    requested = sorted(r.partition_key for r in data.run_requests)
    assert requested == sorted(str(v) for v in job.variant_ids)
    for request in data.run_requests:
        assert request.tags[LAUNCHED_BY_TAG] == "outbox_sensor"
        assert PRIORITY_TAG not in request.tags  # new work: the queue's default priority, after resumed work
        assert request.asset_selection is None and request.job_name == "variant_pipeline"
    added = {k for req in data.dynamic_partitions_requests for k in req.partition_keys}
    assert added == {str(v) for v in job.variant_ids} | {str(job.job_id)}
    assert data.cursor

    # Replaying the same tick (a crash before the cursor was saved) asks for the same run keys,
    # which the daemon de-duplicates; with the saved cursor nothing is asked again.
    replay = _sensor_tick(dagster_instance, None)
    assert sorted(r.run_key for r in replay.run_requests) == sorted(r.run_key for r in data.run_requests)
    after = _sensor_tick(dagster_instance, data.cursor)
    assert after.run_requests == []

    # Another system marks a variant's image done: one run, from vlm_analyze.
    with transaction(engine) as conn:
        conn.execute(sa.text("UPDATE jobs_variants SET current_step = 'img_gen', status = 'done' "
                             "WHERE job_variants_id = :v"), {"v": str(job.variant_ids[0])})
    later = _sensor_tick(dagster_instance, data.cursor)
    [run] = later.run_requests
    assert run.partition_key == str(job.variant_ids[0])
    assert run.asset_selection[0] == dg.AssetKey("vlm_analyze")
    assert int(run.tags[EVENT_TAG]) > 0


def test_a_request_is_not_hidden_by_a_later_own_write_in_the_same_batch() -> None:
    external = event(1, "img_gen", "done")
    own = event(2, "vlm_analyze", "running", origin="dagster-run:abc")
    [run] = plan_tick([external, own], [str(VARIANT)], [str(JOB)]).runs
    assert (run.start_stage, run.event_id) == ("vlm_analyze", 1)


def test_idle_tick_keeps_listening_past_events_that_ask_for_nothing(pipeline_env) -> None:
    import threading
    import time

    from variant_pipeline.sensors.outbox import next_plan

    engine = get_engine(pipeline_env.app_url)
    job = create_job(engine, variants=1)
    variant = str(job.variant_ids[0])
    _, cursor, _ = next_plan(engine, None, 0.0, lambda events: plan_tick(events, [], []))  # past the submit

    def writes() -> None:
        time.sleep(0.3)  # a run's own progress first: asks for nothing
        with transaction(engine, "dagster-run:r1") as conn:
            conn.execute(sa.text("UPDATE jobs_variants SET status = 'running' WHERE job_variants_id = :v"),
                         {"v": variant})
        time.sleep(0.7)  # then another system marks the image done: asks for vlm_analyze
        with transaction(engine) as conn:
            conn.execute(sa.text("UPDATE jobs_variants SET status = 'done' WHERE job_variants_id = :v"),
                         {"v": variant})

    writer = threading.Thread(target=writes)
    writer.start()
    tick, _, read = next_plan(engine, cursor, 20.0, lambda events: plan_tick(events, [variant], [str(job.job_id)]))
    writer.join()
    assert tick is not None, "the external event was not picked up within the listen budget"
    [run] = tick.runs
    assert (run.partition_key, run.start_stage) == (variant, "vlm_analyze")
    assert read >= 2  # the own write was read (and passed over) before the external one


def test_idle_tick_with_only_own_writes_moves_the_cursor_and_asks_for_nothing(pipeline_env) -> None:
    from variant_pipeline.data.outbox import decode_cursor
    from variant_pipeline.sensors.outbox import next_plan

    engine = get_engine(pipeline_env.app_url)
    job = create_job(engine, variants=1)
    _, cursor, _ = next_plan(engine, None, 0.0, lambda events: plan_tick(events, [], []))
    with transaction(engine, "dagster-run:r2") as conn:
        conn.execute(sa.text("UPDATE jobs_variants SET status = 'running' WHERE job_variants_id = :v"),
                     {"v": str(job.variant_ids[0])})
    tick, after, read = next_plan(engine, cursor, 0.5, lambda events: plan_tick(events, [str(job.variant_ids[0])],
                                                                          [str(job.job_id)]))
    assert tick is None and read >= 1
    assert decode_cursor(after) > decode_cursor(cursor)
