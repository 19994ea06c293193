"""A run the pipeline launched acts on the state it was launched for; a stale duplicate does nothing.

Found with a second ``dagster-daemon`` beside the first: the outbox sensor launched a second run
for an event long after the first had carried its variant to the end. That run redid every stage
from ``img_gen``, moved the variant (and its job) back, and each return to "all variants done"
launched the job stages again. A duplicate like that can also come from a replayed tick or a
recovery restart racing a slow run. These tests run real stage assets against a real PostgreSQL
and Dagster storage: the duplicate writes nothing, says why in an observation and in
``status --attempts`` (a ``skipped`` attempt row), and a person's own run still runs.
"""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from tests.fixtures.pipeline import submit_sample
from variant_pipeline import stages as stage_graph
from variant_pipeline.assets.jobs import EVENT_TAG, LAUNCHED_BY_TAG, START_STAGE_TAG
from variant_pipeline.assets.partitions import job_partitions, variant_partitions
from variant_pipeline.assets.stage_assets import JOB_ASSETS, VARIANT_ASSETS
from variant_pipeline.data.engine import get_engine
from variant_pipeline.data.locks import PartitionLock
from variant_pipeline.data.partition_state import attempts_of
from variant_pipeline.resources import default_resources
from variant_pipeline.state import attempts as attempts_module

OUTBOX_RUN = {LAUNCHED_BY_TAG: "outbox_sensor", START_STAGE_TAG: "img_gen", EVENT_TAG: "1"}
JOB_RUN = {LAUNCHED_BY_TAG: "outbox_sensor", START_STAGE_TAG: "ad_copy_gen_kor", EVENT_TAG: "2"}


def _run(instance, assets, key: str, tags: dict[str, str] | None, selection: list[str] | None = None):
    return dg.materialize(assets, partition_key=key, instance=instance, resources=default_resources(),
                          tags=tags, selection=selection, raise_on_error=False)


def _snapshot(engine, job_id: str) -> dict:
    """Everything a stage run could change: row states, committed attempts, outputs, events."""
    with engine.connect() as conn:
        def scalar(sql: str):
            return conn.execute(sa.text(sql), {"j": job_id}).scalar_one()
        return {
            "variants": conn.execute(sa.text(
                "SELECT job_variants_id, current_step, status, attempt, run_id, updated_at FROM jobs_variants "
                "WHERE job_id = :j ORDER BY creation_order"), {"j": job_id}).all(),
            "job": conn.execute(sa.text(
                "SELECT current_step, status, attempt, run_id, updated_at FROM jobs WHERE job_id = :j"),
                {"j": job_id}).one(),
            "done_attempts": scalar("SELECT count(*) FROM stage_attempts WHERE job_id = :j AND outcome = 'done'"),
            "events": scalar("SELECT count(*) FROM pipeline_events WHERE job_id = :j"),
            "images": scalar("SELECT count(*) FROM image_assets WHERE job_id = :j"),
            "feeds": scalar("SELECT count(*) FROM instagram_feeds WHERE job_id = :j"),
        }


def _materialized(result) -> list[str]:
    return [e.asset_key.to_user_string() for e in result.all_events
            if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]


def test_a_stale_launched_run_does_nothing_and_says_so(pipeline_env, dagster_instance) -> None:
    engine = get_engine(pipeline_env.app_url)
    job = submit_sample(pipeline_env.app_url, variants=1)
    key, job_key = str(job.variant_ids[0]), str(job.job_id)
    dagster_instance.add_dynamic_partitions(variant_partitions.name, [key])
    dagster_instance.add_dynamic_partitions(job_partitions.name, [job_key])

    # The launched runs carry the variant and then its job to the end.
    assert _run(dagster_instance, VARIANT_ASSETS, key, OUTBOX_RUN).success
    assert _run(dagster_instance, JOB_ASSETS, job_key, JOB_RUN).success
    before = _snapshot(engine, job_key)
    assert (before["job"].current_step, before["job"].status) == (stage_graph.LAST_JOB_STAGE, "done")
    assert before["done_attempts"] == len(stage_graph.STAGES)

    # The same launches again, as a second daemon made them: nothing is redone or moved back.
    stale_variant_run = _run(dagster_instance, VARIANT_ASSETS, key, OUTBOX_RUN)
    stale_job_run = _run(dagster_instance, JOB_ASSETS, job_key, JOB_RUN)
    assert stale_variant_run.success and stale_job_run.success
    assert _materialized(stale_variant_run) == [] and _materialized(stale_job_run) == []
    assert _snapshot(engine, job_key) == before

    # Each says why, once, at its first stage; Dagster skipped the later ones.
    for result, stage in ((stale_variant_run, "img_gen"), (stale_job_run, "ad_copy_gen_kor")):
        observations = [e for e in result.all_events if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION]
        assert [o.asset_key.to_user_string() for o in observations] == [stage]
        skipped_text = observations[0].event_specific_data.asset_observation.metadata["skipped"].value
        assert skipped_text.startswith("stale run:") and "nothing written" in skipped_text
        assert any(e.event_type == dg.DagsterEventType.STEP_SKIPPED for e in result.all_events)
    skipped = [a for a in attempts_of(engine, key) + attempts_of(engine, job_key) if a["outcome"] == "skipped"]
    assert [(a["stage"], a["run_id"]) for a in skipped] == [
        ("img_gen", stale_variant_run.run_id), ("ad_copy_gen_kor", stale_job_run.run_id)]
    assert "asks for no further stage" in skipped[0]["error"]

    # A person's run of the same stage is not stale: it runs (a new round), and the job reopens.
    hand = _run(dagster_instance, VARIANT_ASSETS, key, None, selection=["overlay"])
    assert hand.success and _materialized(hand) == ["overlay"]
    overlay = [a for a in attempts_of(engine, key) if a["stage"] == "overlay" and a["outcome"] == "done"]
    assert [a["run_id"] for a in overlay][-1] == hand.run_id


def test_a_launched_run_arriving_mid_flight_leaves_the_variant_to_its_run(pipeline_env, dagster_instance,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A duplicate that arrives while another worker holds the partition waits a moment, then
    skips: it neither fails its run nor takes over."""
    engine = get_engine(pipeline_env.app_url)
    job = submit_sample(pipeline_env.app_url, variants=1)
    key = str(job.variant_ids[0])
    dagster_instance.add_dynamic_partitions(variant_partitions.name, [key])
    monkeypatch.setattr(attempts_module, "LAUNCHED_RUN_LOCK_WAIT_S", 0.5)

    holder = PartitionLock(engine, key)
    assert holder.try_acquire()
    try:
        duplicate = _run(dagster_instance, VARIANT_ASSETS, key, OUTBOX_RUN)
        by_hand = _run(dagster_instance, VARIANT_ASSETS, key, None, selection=["img_gen"])
    finally:
        holder.release()
    assert duplicate.success and _materialized(duplicate) == []
    (skipped,) = [a for a in attempts_of(engine, key) if a["outcome"] == "skipped"]
    assert skipped["run_id"] == duplicate.run_id and "another run holds the variant's lock" in skipped["error"]
    # A person's run is told the partition is busy, as before.
    assert not by_hand.success
    with engine.connect() as conn:
        state = conn.execute(sa.text("SELECT current_step, status FROM jobs_variants WHERE job_variants_id = :k"),
                             {"k": key}).one()
    assert tuple(state) == ("img_gen", "queued")  # untouched: the lock holder owns it


def test_a_launched_run_does_not_jump_a_retry_that_is_backing_off(pipeline_env, dagster_instance) -> None:
    """A row waiting for its automatic retry is the recovery sensor's: a duplicate launch for an
    older event must not run it early with a fresh attempt budget."""
    engine = get_engine(pipeline_env.app_url)
    job = submit_sample(pipeline_env.app_url, variants=1)
    key = str(job.variant_ids[0])
    dagster_instance.add_dynamic_partitions(variant_partitions.name, [key])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs_variants SET attempt = 1, retry_at = now() + interval '1 hour' "
                             "WHERE job_variants_id = :k"), {"k": key})
    duplicate = _run(dagster_instance, VARIANT_ASSETS, key, OUTBOX_RUN)
    assert duplicate.success and _materialized(duplicate) == []
    (skipped,) = [a for a in attempts_of(engine, key) if a["outcome"] == "skipped"]
    assert "waiting for its automatic retry" in skipped["error"]
