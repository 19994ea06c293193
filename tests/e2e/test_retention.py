"""Pruning while the real daemon runs and new jobs arrive: no event lost, no run stopped."""

from __future__ import annotations

import time

import dagster as dg
import pytest
import sqlalchemy as sa

from tests.e2e.test_faults import _outbox_cursor, pipeline
from tests.fixtures.pipeline import submit_sample
from variant_pipeline import stages as stage_graph
from variant_pipeline.assets.partitions import job_partitions, variant_partitions
from variant_pipeline.cli import main
from variant_pipeline.data.engine import get_engine
from variant_pipeline.data.jobs import get_job_status
from variant_pipeline.data.outbox import read_events_after
from variant_pipeline.data.storage import AssetStore
from variant_pipeline.services import wait_for_job, wait_for_runs_to_settle


def _finished(engine, job_id) -> bool:
    status = get_job_status(engine, job_id)
    return status.finished_at is not None


@pytest.mark.e2e
def test_prune_while_the_daemon_runs_new_jobs_loses_no_event_and_stops_no_run(pipeline_env, monkeypatch,
                                                                             capsys) -> None:
    # Orphan files may be as young as the cutoff: only the running-attempt bound protects the
    # files of the stages in flight, which is what this test puts under load.
    # Recovery at its defaults: this test is about prune, and a loaded machine must not make a slow
    # run worker look dead (the fault tests' 20 s lease grace) or a slow variant look stalled.
    with pipeline(monkeypatch, VP_ORPHAN_MIN_AGE_S="0", VP_RUN_LEASE_GRACE_S="60",
                  VP_STALL_AFTER_S="300") as (env, services):
        engine = get_engine(env.app_url)
        old = submit_sample(env.app_url, variants=1)
        wait_for_job(env.app_url, old.job_id, timeout_s=600, log=lambda _m: None)
        assert wait_for_runs_to_settle(timeout_s=120) == 0
        store = AssetStore.from_settings(env.settings)
        with engine.connect() as conn:
            old_files = [store.path_for(p) for (p,) in conn.execute(
                sa.text("SELECT path FROM image_assets WHERE job_id = :j"), {"j": str(old.job_id)})]
        assert len(old_files) == 6 and all(p.exists() for p in old_files)  # photo + 5 stage images

        new = [submit_sample(env.app_url, variants=1) for _ in range(2)]
        prunes = 0
        deadline = time.monotonic() + 900
        # prune deletes the Dagster runs of the jobs it prunes (a new job finished while the other
        # still runs is pruned too): every run is noted before each prune, to count them all.
        seen: dict[str, str | None] = {}
        with dg.DagsterInstance.get() as instance:
            while not all(_finished(engine, job.job_id) for job in new):
                assert time.monotonic() < deadline, "the new jobs did not finish"
                seen.update({r.run_id: r.tags.get("dagster/partition") for r in instance.get_runs()})
                assert main(["prune", "--older-than", "1s"]) == 0
                prunes += 1
                time.sleep(0.5)
        assert wait_for_runs_to_settle(timeout_s=120) == 0
        output = capsys.readouterr().out
        # Everything read: the sensor's cursor is past every event still in the outbox.
        unread: list = []
        for _ in range(30):
            unread, _cursor = read_events_after(engine, _outbox_cursor(), limit=1000)
            if not unread:
                break
            time.sleep(1)
        assert unread == []
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs()
            variants = set(instance.get_dynamic_partitions(variant_partitions.name))
            jobs = set(instance.get_dynamic_partitions(job_partitions.name))
    daemon_log = services.logs["daemon"].read_text(errors="replace")[-3000:]

    assert prunes >= 3, output
    # No run stopped: every run left succeeded (prune deletes a job's runs only when none is in
    # flight), and there was one run per variant and one per job (no event ran twice, none was
    # dropped: each new variant's and job's run existed).
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]
    seen.update({r.run_id: r.tags.get("dagster/partition") for r in runs})
    expected = {str(v) for job in [old, *new] for v in job.variant_ids} | {str(j.job_id) for j in [old, *new]}
    assert sorted(seen.values()) == sorted(expected), daemon_log
    # The old job's runs went with its partitions.
    assert not {str(old.variant_ids[0]), str(old.job_id)} & {r.tags.get("dagster/partition") for r in runs}
    for job in new:
        status = get_job_status(engine, job.job_id)
        assert (status.stage, status.status) == (stage_graph.LAST_JOB_STAGE, "done"), daemon_log
        assert all((v.stage, v.status) == (stage_graph.LAST_VARIANT_STAGE, "done") for v in status.variants)
    # The old job was pruned: partitions and files gone, rows and status kept, its events trimmed.
    assert f"job {old.job_id} (done" in output
    assert str(old.variant_ids[0]) not in variants and str(old.job_id) not in jobs
    assert not any(p.exists() for p in old_files)
    with engine.connect() as conn:
        events_left = conn.execute(sa.text("SELECT count(*) FROM pipeline_events WHERE job_id = :j"),
                                   {"j": str(old.job_id)}).scalar_one()
    assert events_left == 0
    assert get_job_status(engine, old.job_id).status == "done"
