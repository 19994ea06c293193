"""Manual retry: ``recovery.request_retry`` and ``variant-pipeline retry``.

A retry queues rows again with a fresh attempt budget and an outbox event (origin ``cli:retry``);
the outbox sensor's planner turns that event into the run, exactly as for a new job. Refusals
print one ``error: ...`` line, exit 2, and write nothing.
"""

from __future__ import annotations

import time
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.fixtures.db import count_rows, create_job
from tests.fixtures.state import set_job_state, set_variant_state
from variant_pipeline import cli
from variant_pipeline.data.engine import transaction
from variant_pipeline.data.outbox import Event, read_events_after
from variant_pipeline.sensors.outbox import PlannedRun, plan_tick
from variant_pipeline.state import claims, recovery
from variant_pipeline.state.retry import RetryPolicy


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _set_variant(engine: Engine, key: str, stage: str, status: str, error: str | None = None) -> None:
    with transaction(engine, "dagster-run:earlier") as conn:
        assert set_variant_state(conn, key, stage, status, error=error)


def _variant(engine: Engine, key: str) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(
            "SELECT current_step, status, attempt, error, retry_at FROM jobs_variants "
            "WHERE job_variants_id = CAST(:k AS uuid)"), {"k": key}).mappings().one())


def _job(engine: Engine, key: str) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(
            "SELECT current_step, status, attempt, error FROM jobs WHERE job_id = CAST(:k AS uuid)"),
            {"k": key}).mappings().one())


def _cursor(engine: Engine) -> str:
    return read_events_after(engine, None, limit=100_000)[1]


def _events_since(engine: Engine, cursor: str) -> list[Event]:
    return read_events_after(engine, cursor, limit=100_000)[0]


def _planned(engine: Engine, cursor: str, job) -> set[tuple[str, str, str]]:
    """What the outbox sensor would launch for the events written since ``cursor``."""
    plan = plan_tick(_events_since(engine, cursor), [str(v) for v in job.variant_ids], [str(job.job_id)])
    runs: list[PlannedRun] = plan.runs
    assert len({(r.level, r.partition_key) for r in runs}) == len(runs)
    return {(r.level, r.partition_key, r.start_stage) for r in runs}


def _finish_all(engine: Engine, job) -> None:
    for v in job.variant_ids:
        _set_variant(engine, str(v), "iou_eval", "done")


@pytest.fixture
def job(engine: Engine):
    return create_job(engine, variants=3)


# --- request_retry ------------------------------------------------------------------------------


def test_a_failed_variant_is_queued_again_at_its_failed_stage(engine, job) -> None:
    key = str(job.variant_ids[0])
    _set_variant(engine, key, "vlm_analyze", "failed", error="failed after 3 attempts: boom")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs_variants SET attempt = 3 WHERE job_variants_id = CAST(:k AS uuid)"),
                     {"k": key})
    cursor = _cursor(engine)

    [request] = recovery.request_retry(engine, key)
    assert (request.level, request.partition_key, request.stage, request.previous) == (
        "variant", key, "vlm_analyze", ("vlm_analyze", "failed"))
    row = _variant(engine, key)
    assert (row["current_step"], row["status"], row["attempt"], row["error"], row["retry_at"]) == (
        "vlm_analyze", "queued", 0, None, None)

    variant_events = [e for e in _events_since(engine, cursor) if e.level == "variant"]
    assert [(str(e.job_variants_id), e.new_stage, e.new_status, e.origin) for e in variant_events] == [
        (key, "vlm_analyze", "queued", "cli:retry")]
    assert _planned(engine, cursor, job) == {("variant", key, "vlm_analyze")}


def test_a_job_retries_exactly_its_failed_variants(engine, job) -> None:
    failed_late, ok, failed_early = (str(v) for v in job.variant_ids)
    _set_variant(engine, failed_late, "overlay", "failed", error="boom")
    _set_variant(engine, ok, "iou_eval", "done")
    _set_variant(engine, failed_early, "img_gen", "failed", error="boom")
    assert (_job(engine, str(job.job_id))["current_step"], _job(engine, str(job.job_id))["status"]) == (
        "iou_eval", "done")
    cursor = _cursor(engine)

    requests = recovery.request_retry(engine, str(job.job_id))
    assert {(r.partition_key, r.stage) for r in requests} == {(failed_late, "overlay"), (failed_early, "img_gen")}
    assert (_variant(engine, ok)["current_step"], _variant(engine, ok)["status"]) == ("iou_eval", "done")
    assert (_variant(engine, failed_late)["current_step"], _variant(engine, failed_late)["status"]) == (
        "overlay", "queued")
    job_row = _job(engine, str(job.job_id))
    assert job_row["status"] == "running" and job_row["current_step"] == "img_gen"  # back in its variant phase
    assert _planned(engine, cursor, job) == {("variant", failed_late, "overlay"), ("variant", failed_early, "img_gen")}


def _job_through_its_feed(engine, job) -> str:
    """Every variant done and the job at (instagram_feed_gen, done); returns the job id."""
    _finish_all(engine, job)
    with transaction(engine, "dagster-run:job-run") as conn:
        set_job_state(conn, str(job.job_id), "instagram_feed_gen", "done")
    return str(job.job_id)


def test_from_a_variant_stage_reopens_a_job_that_reached_its_job_stages(engine, job) -> None:
    job_key = _job_through_its_feed(engine, job)
    cursor = _cursor(engine)

    requests = recovery.request_retry(engine, job_key, "overlay")
    assert sorted((r.partition_key, r.stage) for r in requests) == sorted((str(v), "overlay") for v in job.variant_ids)
    for v in job.variant_ids:
        assert (_variant(engine, str(v))["current_step"], _variant(engine, str(v))["status"]) == ("overlay", "queued")
    job_row = _job(engine, job_key)
    assert job_row["current_step"] == "overlay" and job_row["status"] == "running"
    # Three variant runs; the job stages wait for the rollup.
    assert _planned(engine, cursor, job) == {("variant", str(v), "overlay") for v in job.variant_ids}


def test_from_a_variant_stage_a_variant_that_never_got_that_far_restarts_where_it_stopped(engine, job) -> None:
    done_a, stopped, done_b = (str(v) for v in job.variant_ids)
    _set_variant(engine, done_a, "iou_eval", "done")
    _set_variant(engine, stopped, "vlm_analyze", "failed", error="boom")  # no planner output to overlay
    _set_variant(engine, done_b, "iou_eval", "done")
    cursor = _cursor(engine)

    requests = recovery.request_retry(engine, str(job.job_id), "overlay")
    assert {(r.partition_key, r.stage) for r in requests} == {
        (done_a, "overlay"), (stopped, "vlm_analyze"), (done_b, "overlay")}
    assert _variant(engine, stopped)["current_step"] == "vlm_analyze"
    assert ("variant", stopped, "vlm_analyze") in _planned(engine, cursor, job)


def test_from_a_job_stage_requeues_the_job_alone(engine, job) -> None:
    job_key = _job_through_its_feed(engine, job)
    cursor = _cursor(engine)

    [request] = recovery.request_retry(engine, job_key, "ad_copy_gen_kor")
    assert (request.level, request.stage) == ("job", "ad_copy_gen_kor")
    assert (_job(engine, job_key)["current_step"], _job(engine, job_key)["status"]) == ("ad_copy_gen_kor", "queued")
    assert _planned(engine, cursor, job) == {("job", job_key, "ad_copy_gen_kor")}


def test_a_failed_job_stage_is_retried_without_from(engine, job) -> None:
    _finish_all(engine, job)
    job_key = str(job.job_id)
    with transaction(engine, "dagster-run:job-run") as conn:
        set_job_state(conn, job_key, "instagram_feed_gen", "failed", error="boom")
    cursor = _cursor(engine)
    [request] = recovery.request_retry(engine, job_key)
    assert (request.level, request.stage, request.previous) == ("job", "instagram_feed_gen",
                                                                ("instagram_feed_gen", "failed"))
    assert _job(engine, job_key) == {"current_step": "instagram_feed_gen", "status": "queued", "attempt": 0,
                                     "error": None}
    assert _planned(engine, cursor, job) == {("job", job_key, "instagram_feed_gen")}


def test_a_row_waiting_for_an_automatic_retry_is_made_due_now_with_a_fresh_budget(engine, job) -> None:
    """Re-queueing at the same stage writes no state change, so no outbox event: the retry is made
    due now, for the recovery sensor to start."""
    key = str(job.variant_ids[0])
    with transaction(engine, "dagster-run:r1") as conn:
        claim = claims.claim(conn, stage="vlm_analyze", partition_key=key, run_id="r1", origin="dagster-run:r1",
                             continues_attempts=False)
        claims.mark_failed(conn, level="variant", partition_key=key, stage="vlm_analyze", attempt=claim.attempt,
                           attempt_id=claim.attempt_id, reason="boom", retryable=True,
                           policy=RetryPolicy(max_attempts=3, backoff_s=3600))
    assert recovery.find_restarts(engine, stall_after_s=600, busy_partitions=[]) == []  # backing off

    [request] = recovery.request_retry(engine, key, "vlm_analyze")
    assert request.previous == ("vlm_analyze", "queued")
    row = _variant(engine, key)
    assert (row["status"], row["attempt"], row["error"]) == ("queued", 0, None)
    [restart] = recovery.find_restarts(engine, stall_after_s=600, busy_partitions=[])
    assert (restart.partition_key, restart.start_stage, restart.why) == (key, "vlm_analyze", "retry")

    # Its run is cancelled before it starts (the key is spent); a second manual retry gets a new key.
    time.sleep(0.01)
    recovery.request_retry(engine, key, "vlm_analyze")
    [again] = recovery.find_restarts(engine, stall_after_s=600, busy_partitions=[])
    assert again.why == "retry" and again.run_key != restart.run_key


def test_a_job_retries_its_failed_variants_while_others_still_run(engine, job) -> None:
    failed, running, waiting = (str(v) for v in job.variant_ids)
    _set_variant(engine, failed, "img_gen", "failed", error="boom")
    _set_variant(engine, running, "vlm_analyze", "running")
    _set_variant(engine, waiting, "planner", "done")
    assert _job(engine, str(job.job_id))["status"] == "running"
    cursor = _cursor(engine)

    [request] = recovery.request_retry(engine, str(job.job_id))
    assert (request.partition_key, request.stage) == (failed, "img_gen")
    assert _variant(engine, running)["status"] == "running"
    assert _planned(engine, cursor, job) == {("variant", failed, "img_gen")}


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_retry_of_a_failed_variant(engine, db_env, job, capsys) -> None:
    key = str(job.variant_ids[1])
    _set_variant(engine, key, "planner", "failed", error="boom")
    code, out, err = run_cli(capsys, "retry", key)
    assert code == 0, err
    assert out.strip() == f"variant {key}: planner/failed -> planner/queued"
    assert (_variant(engine, key)["current_step"], _variant(engine, key)["status"]) == ("planner", "queued")


def test_cli_retry_of_a_job_from_a_variant_stage(engine, db_env, job, capsys) -> None:
    _finish_all(engine, job)
    code, out, err = run_cli(capsys, "retry", str(job.job_id), "--from", "overlay")
    assert code == 0, err
    assert sorted(out.splitlines()) == sorted(f"variant {v}: iou_eval/done -> overlay/queued" for v in job.variant_ids)


def test_cli_retry_of_a_job_from_a_job_stage(engine, db_env, job, capsys) -> None:
    _finish_all(engine, job)
    code, out, err = run_cli(capsys, "retry", str(job.job_id), "--from", "ad_copy_gen_kor")
    assert code == 0, err
    assert out.strip() == f"job {job.job_id}: iou_eval/done -> ad_copy_gen_kor/queued"


def _refused(engine: Engine, capsys, *argv: str) -> str:
    before = count_rows(engine, "pipeline_events"), count_rows(engine, "stage_attempts")
    with engine.connect() as conn:
        states = conn.execute(sa.text(
            "SELECT job_variants_id::text, current_step, status, attempt FROM jobs_variants "
            "UNION ALL SELECT job_id::text, current_step, status, attempt FROM jobs ORDER BY 1")).all()
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert (count_rows(engine, "pipeline_events"), count_rows(engine, "stage_attempts")) == before
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT job_variants_id::text, current_step, status, attempt FROM jobs_variants "
            "UNION ALL SELECT job_id::text, current_step, status, attempt FROM jobs ORDER BY 1")).all() == states
    return err


def test_cli_refuses_a_job_stage_without_a_finished_variant(engine, db_env, job, capsys) -> None:
    for v in job.variant_ids:
        _set_variant(engine, str(v), "overlay", "failed", error="boom")
    assert _job(engine, str(job.job_id))["status"] == "failed"
    err = _refused(engine, capsys, "retry", str(job.job_id), "--from", "ad_copy_gen_kor")
    assert "no finished variant" in err


def test_cli_refuses_a_job_stage_for_a_job_not_started(engine, db_env, job, capsys) -> None:
    err = _refused(engine, capsys, "retry", str(job.job_id), "--from", "instagram_feed_gen")
    assert "no finished variant" in err


def test_cli_refuses_a_running_variant(engine, db_env, job, capsys) -> None:
    key = str(job.variant_ids[0])
    _set_variant(engine, key, "vlm_analyze", "running")
    err = _refused(engine, capsys, "retry", key, "--from", "img_gen")
    assert "is running vlm_analyze" in err


def test_cli_refuses_a_job_with_a_running_variant_from_a_variant_stage(engine, db_env, job, capsys) -> None:
    _set_variant(engine, str(job.variant_ids[0]), "iou_eval", "done")
    _set_variant(engine, str(job.variant_ids[1]), "iou_eval", "done")
    _set_variant(engine, str(job.variant_ids[2]), "vlm_analyze", "running")
    err = _refused(engine, capsys, "retry", str(job.job_id), "--from", "overlay")
    assert "running" in err


def test_cli_refuses_job_stages_while_variants_are_in_progress(engine, db_env, job, capsys) -> None:
    _set_variant(engine, str(job.variant_ids[0]), "iou_eval", "done")
    _set_variant(engine, str(job.variant_ids[1]), "overlay", "running")
    err = _refused(engine, capsys, "retry", str(job.job_id), "--from", "ad_copy_gen_kor")
    assert "in progress" in err


def test_cli_refuses_a_job_whose_job_stage_is_running(engine, db_env, job, capsys) -> None:
    _finish_all(engine, job)
    with transaction(engine, "dagster-run:job-run") as conn:
        set_job_state(conn, str(job.job_id), "ad_copy_gen_kor", "running")
    err = _refused(engine, capsys, "retry", str(job.job_id), "--from", "overlay")
    assert "is running ad_copy_gen_kor" in err


def test_cli_refuses_an_unknown_stage(engine, db_env, job, capsys) -> None:
    err = _refused(engine, capsys, "retry", str(job.variant_ids[0]), "--from", "upscale")
    assert "unknown stage 'upscale'" in err and "img_gen" in err


def test_cli_refuses_an_unknown_id(engine, db_env, job, capsys) -> None:
    missing = str(uuid.uuid4())
    err = _refused(engine, capsys, "retry", missing)
    assert f"no variant or job with id {missing}" in err


def test_cli_refuses_a_malformed_id(engine, db_env, job, capsys) -> None:
    err = _refused(engine, capsys, "retry", "not-a-uuid")
    assert "not-a-uuid" in err


def test_cli_refuses_a_variant_that_has_not_failed(engine, db_env, job, capsys) -> None:
    key = str(job.variant_ids[0])
    _set_variant(engine, key, "planner", "done")
    err = _refused(engine, capsys, "retry", key)
    assert "has not failed" in err and "--from" in err


def test_cli_refuses_a_job_with_nothing_failed(engine, db_env, job, capsys) -> None:
    _finish_all(engine, job)
    err = _refused(engine, capsys, "retry", str(job.job_id))
    assert "nothing failed" in err


def test_cli_refuses_a_job_stage_for_a_variant(engine, db_env, job, capsys) -> None:
    _finish_all(engine, job)
    err = _refused(engine, capsys, "retry", str(job.variant_ids[0]), "--from", "ad_copy_gen_kor")
    assert "job-level stage" in err and str(job.job_id) in err


def test_cli_refuses_a_variant_from_a_stage_it_never_reached(engine, db_env, job, capsys) -> None:
    key = str(job.variant_ids[0])
    _set_variant(engine, key, "vlm_analyze", "failed", error="boom")
    err = _refused(engine, capsys, "retry", key, "--from", "overlay")
    assert "has not reached overlay" in err and "vlm_analyze" in err
