"""End to end, as a user runs it: the Dagster daemon on PostgreSQL, a submitted job, nothing else.

The daemon's outbox sensor sees the new variants, launches their runs; the last variant's rollup
starts the job-level run; the test only watches the database and Dagster's records.
"""

from __future__ import annotations

from collections import Counter

import dagster as dg
import pytest
import sqlalchemy as sa

from tests.fixtures.pipeline import submit_sample
from variant_pipeline import stages as stage_graph
from variant_pipeline.assets.jobs import EVENT_TAG, LAUNCHED_BY_TAG
from variant_pipeline.data.engine import get_engine
from variant_pipeline.services import (
    prepare_environment,
    start_services,
    wait_for_job,
    wait_for_runs_to_settle,
)


@pytest.mark.e2e
def test_daemon_runs_a_submitted_job_to_its_instagram_feed(pipeline_env, monkeypatch) -> None:
    import os

    for name in ("DAGSTER_HOME", "VP_DAGSTER_STORAGE_URL", "DATABASE_URL"):
        # prepare_environment sets these in this process; monkeypatch restores them afterwards.
        monkeypatch.setenv(name, os.environ.get(name, ""))
    env = prepare_environment(log=lambda _msg: None)
    services = start_services(env, webserver_port=None, log=lambda _msg: None)
    try:
        job = submit_sample(env.app_url, variants=3)
        status = wait_for_job(env.app_url, job.job_id, timeout_s=1200, log=lambda _msg: None)
        in_flight = wait_for_runs_to_settle(timeout_s=120)
    finally:
        services.stop()

    daemon_log = services.logs["daemon"].read_text(errors="replace")[-3000:]
    assert (status.stage, status.status) == (stage_graph.LAST_JOB_STAGE, "done"), daemon_log
    assert in_flight == 0, daemon_log
    for variant in status.variants:
        assert (variant.stage, variant.status) == (stage_graph.LAST_VARIANT_STAGE, "done"), variant.error

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]
        # One run per variant and one for the job: nothing ran twice, no event started two runs.
        assert len(runs) == 4
        assert all(r.tags.get(LAUNCHED_BY_TAG) == "outbox_sensor" for r in runs)
        per_event = Counter(r.tags[EVENT_TAG] for r in runs)
        assert max(per_event.values()) == 1
        assert sorted(r.tags.get("dagster/partition") for r in runs) == sorted(
            [str(v) for v in job.variant_ids] + [str(job.job_id)]
        )

        # Exactly one materialization of each stage per partition, each with its models loaded once.
        keys = {"variant": [str(v) for v in job.variant_ids], "job": [str(job.job_id)]}
        for stage in stage_graph.STAGES:
            for key in keys[stage.level]:
                records = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage.name), asset_partitions=[key]), limit=10
                ).records
                assert len(records) == 1, (stage.name, key)
                metadata = records[0].asset_materialization.metadata
                loads = metadata["model_loads_in_run"].value
                assert all(n == 1 for n in loads.values()), (stage.name, loads)

    with get_engine(env.app_url).connect() as conn:
        feeds = conn.execute(sa.text("SELECT count(*) FROM instagram_feeds WHERE job_id = :j"),
                             {"j": str(job.job_id)}).scalar_one()
        evaluations = conn.execute(sa.text("SELECT count(*) FROM evaluations WHERE job_id = :j"),
                                   {"j": str(job.job_id)}).scalar_one()
    assert feeds == 1
    assert evaluations == 3 * 3
