"""The soak's invariant checks (scripts/soak_checks.py) against a real PostgreSQL: each planted
violation is reported, and the same rows without it are clean.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image

from tests.fixtures.db import create_job
from tests.fixtures.state import set_variant_state
from variant_pipeline.data import upstream
from variant_pipeline.data.jobs import add_tenant
from variant_pipeline.data.locks import PartitionLock
from variant_pipeline.data.storage import AssetStore
from variant_pipeline.stages import FIRST_VARIANT_STAGE

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import soak_checks as checks  # noqa: E402


def _attempt(conn, job_id, variant_id, stage: str, attempt: int, outcome: str, run_id: str | None = None) -> int:
    return conn.execute(sa.text(
        """INSERT INTO stage_attempts (level, job_id, job_variants_id, stage, attempt, run_id, origin, worker,
                                       outcome, finished_at)
           VALUES ('variant', :j, :v, :s, :a, :r, 'dagster-run:' || :r, 'host:1', :o,
                   CASE WHEN :o = 'running' THEN NULL ELSE now() END)
           RETURNING attempt_id"""),
        {"j": str(job_id), "v": str(variant_id), "s": stage, "a": attempt, "r": run_id or uuid.uuid4().hex,
         "o": outcome}).scalar_one()


def test_two_committed_attempts_in_one_round_are_reported(engine) -> None:
    job = create_job(engine, variants=2)
    v1, v2 = job.variant_ids
    with engine.begin() as conn:
        _attempt(conn, job.job_id, v1, "img_gen", 1, "lost")
        _attempt(conn, job.job_id, v1, "img_gen", 2, "done")  # one round, one commit: clean
        _attempt(conn, job.job_id, v2, "img_gen", 1, "done")
        _attempt(conn, job.job_id, v2, "img_gen", 2, "done")  # the same round committed again
    with engine.connect() as conn:
        found = checks.check_committed_rounds(conn, {})
    assert len(found) == 1 and found[0].startswith("committed twice in one round") and str(v2) in found[0]


def test_a_duplicated_run_redoing_committed_work_is_reported(engine) -> None:
    job = create_job(engine, variants=1)
    [v1] = job.variant_ids
    with engine.begin() as conn:
        _attempt(conn, job.job_id, v1, "img_gen", 1, "done", run_id="first")
        _attempt(conn, job.job_id, v1, "img_gen", 1, "done", run_id="second")
    key = f"variant:{v1}:from:img_gen:event:1"
    runs = {r: checks.RunInfo(r, "outbox_sensor", key, None) for r in ("first", "second")}
    with engine.connect() as conn:
        [message] = checks.check_committed_rounds(conn, runs)
        assert message.startswith("stage redone by a duplicated request")
        # The same rows when the second run was started by a person: a legitimate new round.
        runs["second"] = checks.RunInfo("second", None, None, None)
        assert checks.check_committed_rounds(conn, runs) == []


def test_a_missing_or_undecodable_image_is_reported_and_a_pruned_jobs_is_not(engine, tmp_path) -> None:
    job = create_job(engine, variants=1)
    store = AssetStore(tmp_path)
    good = store.save_image("tenant-a", "generated", Image.new("RGB", (32, 32), (1, 2, 3)))
    broken = store.save_image("tenant-a", "generated", Image.new("RGB", (32, 32), (1, 2, 3)))
    store.put_bytes(broken.relative_path, b"not a png")
    with engine.begin() as conn:
        for path in (good.relative_path, broken.relative_path, "tenants/tenant-a/generated/gone.png"):
            upstream.insert_image_asset(conn, "tenant-a", str(job.job_id), "generated", path)
    with engine.connect() as conn:
        found = checks.check_images(conn, store)
        assert len(found) == 2, found
        assert any(m.startswith("image missing") and "gone.png" in m for m in found)
        assert any(m.startswith("image does not decode") and broken.relative_path in m for m in found)
        # Files deliberately bad (the soak's planted input) are left out when named.
        assert len(checks.check_images(conn, store, exclude_paths=[broken.relative_path])) == 1
    with engine.begin() as conn:  # prune removed the job's files: its older rows are not checked
        conn.execute(sa.text("UPDATE jobs SET pruned_at = now() + interval '1 second' WHERE job_id = :j"),
                     {"j": str(job.job_id)})
    with engine.connect() as conn:
        assert checks.check_images(conn, store) == []


def test_a_running_attempt_left_over_is_reported_and_one_whose_lock_is_held_is_not(engine) -> None:
    job = create_job(engine, variants=2)
    v1, v2 = job.variant_ids
    with engine.begin() as conn:
        lost = _attempt(conn, job.job_id, v1, "vlm_analyze", 1, "running")
        _attempt(conn, job.job_id, v2, "vlm_analyze", 1, "running")
    lock = PartitionLock(engine, str(v2))  # v2's worker is alive: it holds its partition lock
    assert lock.try_acquire()
    try:
        watch = checks.LostClaimWatch(limit_s=10)
        with engine.connect() as conn:
            assert watch.check(conn, now=1000.0, up_since=0.0) == []  # first seen free now
            [message] = watch.check(conn, now=1011.0, up_since=0.0)
            assert message.startswith(f"attempt #{lost} ") and str(v1) in message
            # Time while the daemon was down does not count.
            assert watch.check(conn, now=1012.0, up_since=1005.0) == []
            assert len(checks.check_no_running_attempts(conn)) == 2
    finally:
        lock.release()


def test_a_state_change_without_its_event_is_reported(engine) -> None:
    job = create_job(engine, variants=1)
    [v1] = job.variant_ids
    with engine.begin() as conn:
        set_variant_state(conn, v1, "img_gen", "running")
        set_variant_state(conn, v1, "img_gen", "done")
        set_variant_state(conn, v1, "vlm_analyze", "running")
    with engine.connect() as conn:
        assert checks.check_event_chains(conn) == []
    with engine.begin() as conn:  # lose the (img_gen, done) event
        conn.execute(sa.text("DELETE FROM pipeline_events WHERE job_variants_id = :v AND new_status = 'done'"),
                     {"v": str(v1)})
    with engine.connect() as conn:
        [message] = checks.check_event_chains(conn)
    assert message.startswith("state change without its event") and str(v1) in message


@pytest.mark.parametrize(("error", "attempts", "ok"), [
    ("StageInputError: job x: Korean ad copy is 59 characters long", [], True),
    ("failed after 3 attempts: InjectedFault: boom", [(1, "failed"), (2, "lost"), (3, "failed")], True),
    ("failed after 3 attempts: InjectedFault: boom", [(1, "failed"), (3, "failed")], False),
    ("something odd happened", [(1, "failed")], False),
])
def test_a_failure_needs_its_recorded_reason(engine, error, attempts, ok) -> None:
    job = create_job(engine, variants=1)
    [v1] = job.variant_ids
    with engine.begin() as conn:
        for number, outcome in attempts:
            _attempt(conn, job.job_id, v1, "vlm_analyze", number, outcome)
        set_variant_state(conn, v1, "vlm_analyze", "failed", error=error)
    with engine.connect() as conn:
        found = [m for m in checks.check_failures_explained(conn, max_attempts=3) if str(v1) in m]
    assert (found == []) is ok, found


def test_bad_cli_input_that_wrote_something_is_reported(engine, tmp_path) -> None:
    with engine.connect() as conn:
        assert checks.check_bad_cli_tenant(conn, AssetStore(tmp_path), "soak-bad") == []
    create_job(engine, tenant_id="soak-bad", variants=1)
    with engine.connect() as conn:
        [message] = checks.check_bad_cli_tenant(conn, AssetStore(tmp_path), "soak-bad")
    assert message.startswith("refused CLI input wrote rows")


def test_jobs_and_variants_left_open_are_reported(engine) -> None:
    job = create_job(engine, variants=1)
    with engine.connect() as conn:
        found = checks.check_all_terminal(conn)
    assert len(found) == 2 and all(str(job.job_id) in m for m in found)


def test_partitions_removed_by_age_or_budget_are_expected_gone_and_live_ones_expected_there(engine) -> None:
    job, kept = create_job(engine, variants=2), create_job(engine, variants=1)
    variants = [str(v) for v in job.variant_ids]
    with engine.begin() as conn:  # finished a while ago; the budget removed its partitions since
        conn.execute(sa.text("UPDATE jobs SET finished_at = now() - interval '1 hour', "
                             "partitions_removed_at = now() WHERE job_id = :j"), {"j": str(job.job_id)})
    live = [str(v) for v in kept.variant_ids]
    with engine.connect() as conn:
        assert checks.check_partitions(conn, live, [str(kept.job_id)]) == []
        [message] = checks.check_partitions(conn, live + variants[:1], [str(kept.job_id)])
        assert message == f"variant {variants[0]} was pruned but its Dagster partition is still there"
        [message] = checks.check_partitions(conn, [], [str(kept.job_id)])
        assert message == f"variant {live[0]} is live but has no Dagster partition"


def test_an_upstream_job_missing_variants_is_partial_until_they_arrive_and_planted_rows_end_as_expected(
        engine) -> None:
    add_tenant(engine, "soak-upstream")
    with engine.begin() as conn:  # the soak's upstream producer: the job and its first variant now...
        job_id = upstream.insert_job(conn, "soak-upstream", 2)
        upstream.insert_job_inputs(conn, job_id, "얼큰한 부대찌개")
        first = upstream.insert_variant(conn, job_id, 1, FIRST_VARIANT_STAGE, "queued")
    with engine.connect() as conn:
        [message] = checks.check_no_partial_jobs(conn)
    assert message == f"partial job {job_id}: inputs present, 1 of 2 variants"
    with engine.begin() as conn:  # ...the rest later, each once however often it is written
        assert not upstream.insert_variant_if_absent(conn, job_id, 1, FIRST_VARIANT_STAGE, "queued")
        assert upstream.insert_variant_if_absent(conn, job_id, 2, FIRST_VARIANT_STAGE, "queued")
    with engine.connect() as conn:
        assert checks.check_no_partial_jobs(conn) == []
        # A row planted as bad input must end failed with its input error, its sibling must not.
        [message] = checks.check_expectations(conn, {first: "bad"})
        assert message.startswith(f"bad input variant {first} ended {FIRST_VARIANT_STAGE}/queued")
    with engine.begin() as conn:
        set_variant_state(conn, first, FIRST_VARIANT_STAGE, "failed", error="StageInputError: the photo is 1 px")
    with engine.connect() as conn:
        assert checks.check_expectations(conn, {first: "bad"}) == []
        [message] = checks.check_expectations(conn, {first: "good"})
        assert message.startswith(f"sibling of a bad input, variant {first}, failed with its input error")
