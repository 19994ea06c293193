"""Faults that really happen, against the real daemon: killed workers, a failing and a hanging
stage, a daemon that stops and starts, a database server that restarts.

Each test ends with every job done or failed with a reason, no stage output written twice, every
Dagster run finished, and the outbox sensor's cursor past every event. Stages misbehave through
the fault drills (VP_FAULTS, variant_pipeline/faults.py), inside their own run workers; the
workers are killed with a real SIGKILL and the server is really stopped and started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from tests.fixtures.pipeline import submit_sample
from variant_pipeline import stages as stage_graph
from variant_pipeline.data import partition_state
from variant_pipeline.data.engine import get_engine
from variant_pipeline.data.jobs import get_job_status
from variant_pipeline.data.outbox import read_events_after
from variant_pipeline.services import (
    Environment,
    Services,
    prepare_environment,
    start_services,
    wait_for_job,
    wait_for_runs_to_settle,
)
from variant_pipeline.state import recovery

# Fast recovery for the tests; the defaults are minutes (see the README's guarantees).
RECOVERY_ENV = {
    "VP_RECOVERY_INTERVAL_S": "2",
    "VP_RETRY_BACKOFF_S": "1",
    "VP_RUN_LEASE_GRACE_S": "20",
    "VP_STALL_AFTER_S": "20",
    "VP_MAX_ATTEMPTS": "3",
}


@contextlib.contextmanager
def pipeline(monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[tuple[Environment, Services]]:
    for name in ("DAGSTER_HOME", "VP_DAGSTER_STORAGE_URL", "DATABASE_URL"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored after the test
    for name, value in {**RECOVERY_ENV, **env}.items():
        monkeypatch.setenv(name, value)
    environment = prepare_environment(log=lambda _msg: None)
    services = start_services(environment, webserver_port=None, log=lambda _msg: None)
    try:
        yield environment, services
    finally:
        services.stop()


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _scalar(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def _running_attempt(engine, variant_id: str, stage: str) -> dict | None:
    for attempt in partition_state.attempts_of(engine, variant_id):
        if attempt["stage"] == stage and attempt["outcome"] == "running":
            return attempt
    return None


def _outbox_cursor() -> str | None:
    with dg.DagsterInstance.get() as instance:
        states = [s for s in instance.all_instigator_state() if s.instigator_name == "outbox_sensor"]
        return states[0].instigator_data.cursor if states and states[0].instigator_data else None


def _assert_settled(engine, job_ids: list[str], log_text: str) -> None:
    """Every run finished, every event read by the outbox sensor, no output row twice."""
    assert wait_for_runs_to_settle(timeout_s=120) == 0, log_text
    # Outbox events are read below the oldest open transaction; nothing is open now. The sensor
    # reads on its next tick (within a few seconds).
    unread: list = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        unread, _ = read_events_after(engine, _outbox_cursor(), limit=1000)
        if not unread:
            break
        time.sleep(1)
    assert unread == [], [(e.id, e.level, e.new_stage, e.new_status, e.origin) for e in unread]
    # The outputs are unique per variant by constraint; what must not happen is a stage's work
    # done (and committed) twice: one 'done' attempt per partition and stage at most.
    twice = _scalar(engine, """SELECT count(*) FROM (
                                   SELECT 1 FROM stage_attempts
                                    WHERE outcome = 'done' AND job_id = ANY(CAST(:jobs AS uuid[]))
                                    GROUP BY coalesce(job_variants_id, job_id), stage HAVING count(*) > 1) d""",
                    jobs=job_ids)
    assert twice == 0
    for job_id in job_ids:
        assert _scalar(engine, "SELECT count(*) FROM instagram_feeds WHERE job_id = :j", j=job_id) <= 1


@pytest.mark.e2e
def test_killed_worker_failing_stage_and_hanging_stage_in_one_job(pipeline_env, monkeypatch) -> None:
    """Variant 1: its worker is SIGKILLed in the middle of yolo_detect (attempt 1), then retried.
    Variant 2: vlm_analyze raises on every attempt: it fails after 3 with the reason.
    Variant 3: overlay hangs on attempt 1 past its 10 s limit, then succeeds on attempt 2.
    The job rolls up to done with two variants and makes its Instagram feed."""
    faults = ("yolo_detect:sleep=120:attempt=1,variant=1;"
              "vlm_analyze:raise:variant=2;"
              "overlay:hang:attempt=1,variant=3")
    with pipeline(monkeypatch, VP_FAULTS=faults, VP_STAGE_TIMEOUTS="overlay=10") as (env, services):
        engine = get_engine(env.app_url)
        job = submit_sample(env.app_url, variants=3)
        v1, v2, v3 = (str(v) for v in job.variant_ids)

        _wait_for(lambda: _running_attempt(engine, v1, "yolo_detect") is not None, 300, "variant 1 in yolo_detect")
        worker = _running_attempt(engine, v1, "yolo_detect")["worker"]
        os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
        killed_at = time.monotonic()
        _wait_for(lambda: any(a["outcome"] == "lost" for a in partition_state.attempts_of(engine, v1)), 60, "lost claim seen")
        noticed_s = time.monotonic() - killed_at

        status = wait_for_job(env.app_url, job.job_id, timeout_s=900, log=lambda _msg: None)
        log_text = services.logs["daemon"].read_text(errors="replace")[-4000:]
        assert (status.stage, status.status) == (stage_graph.LAST_JOB_STAGE, "done"), log_text
        _assert_settled(engine, [str(job.job_id)], log_text)

        by_id = {str(v.job_variants_id): v for v in status.variants}
        assert (by_id[v1].stage, by_id[v1].status) == (stage_graph.LAST_VARIANT_STAGE, "done")
        assert (by_id[v3].stage, by_id[v3].status) == (stage_graph.LAST_VARIANT_STAGE, "done")
        assert (by_id[v2].stage, by_id[v2].status) == ("vlm_analyze", "failed")
        assert by_id[v2].error.startswith("failed after 3 attempts: InjectedFault")

        def history(variant_id: str, stage: str) -> list[tuple[int, str]]:
            return [(a["attempt"], a["outcome"]) for a in partition_state.attempts_of(engine, variant_id) if a["stage"] == stage]

        assert history(v1, "yolo_detect") == [(1, "lost"), (2, "done")]
        assert history(v2, "vlm_analyze") == [(1, "failed"), (2, "failed"), (3, "failed")]
        assert history(v3, "overlay") == [(1, "failed"), (2, "done")]
        timeout_error = [a["error"] for a in partition_state.attempts_of(engine, v3) if a["stage"] == "overlay"][0]
        assert "did not finish within its time limit of 10 s" in timeout_error
        # The failed variant wrote nothing past its failing stage; the others one evaluation set each.
        assert _scalar(engine, "SELECT count(*) FROM evaluations WHERE job_variants_id = :v", v=v2) == 0
        assert _scalar(engine, "SELECT count(*) FROM evaluations WHERE job_id = :j", j=str(job.job_id)) == 2 * 3
        assert _scalar(engine, "SELECT count(*) FROM instagram_feeds WHERE job_id = :j", j=str(job.job_id)) == 1

        with dg.DagsterInstance.get() as instance:
            killed_runs = [r for r in instance.get_runs() if r.run_id == partition_state.attempts_of(engine, v1)[0]["run_id"]]
        assert killed_runs and killed_runs[0].status == dg.DagsterRunStatus.FAILURE
    print(f"\nSIGKILLed worker noticed by recovery after {noticed_s:.1f} s")


@pytest.mark.e2e
def test_daemon_stopped_mid_job_and_started_again(pipeline_env, monkeypatch) -> None:
    """The daemon (with its code server and run workers) stops while a job runs; another job is
    submitted and a variant retried by hand while it is down. Started again, both jobs finish."""
    with pipeline(monkeypatch) as (env, services):
        engine = get_engine(env.app_url)
        first = submit_sample(env.app_url, variants=2)
        _wait_for(lambda: _scalar(engine, "SELECT count(*) FROM stage_attempts WHERE stage = 'vlm_analyze'") > 0,
                  300, "a variant in vlm_analyze")
    # Down: the daemon, its code server and the run workers are gone.
    events_before = _scalar(engine, "SELECT max(id) FROM pipeline_events")
    second = submit_sample(env.app_url, variants=2)
    assert _scalar(engine, "SELECT max(id) FROM pipeline_events") > events_before

    with pipeline(monkeypatch) as (env, services):
        started = time.monotonic()
        statuses = [wait_for_job(env.app_url, j.job_id, timeout_s=900, log=lambda _msg: None) for j in (first, second)]
        took = time.monotonic() - started
        log_text = services.logs["daemon"].read_text(errors="replace")[-4000:]
        for status in statuses:
            assert (status.stage, status.status) == (stage_graph.LAST_JOB_STAGE, "done"), log_text
        _assert_settled(engine, [str(first.job_id), str(second.job_id)], log_text)
        interrupted = [a for a in partition_state.attempts_of(engine, str(first.variant_ids[0])) +
                       partition_state.attempts_of(engine, str(first.variant_ids[1])) if a["outcome"] == "lost"]
    print(f"\nafter the restart both jobs finished in {took:.0f} s; {len(interrupted)} interrupted attempts recovered")


@pytest.mark.e2e
def test_database_server_restarted_while_runs_are_in_flight(pipeline_env, pg_admin_url, monkeypatch) -> None:
    if os.environ.get("VP_TEST_DATABASE_URL"):
        pytest.skip("the server belongs to VP_TEST_DATABASE_URL; only the embedded one is restarted")
    from variant_pipeline.data.embedded_pg import (
        embedded_server_state,
        ensure_embedded_server,
        stop_embedded_server,
    )

    pgdata = embedded_server_state_for(pg_admin_url, embedded_server_state)
    with pipeline(monkeypatch) as (env, services):
        engine = get_engine(env.app_url)
        job = submit_sample(env.app_url, variants=3)
        _wait_for(lambda: _scalar(engine, "SELECT count(*) FROM stage_attempts WHERE outcome = 'running'") > 0,
                  300, "a stage in flight")
        stop_embedded_server(pgdata)
        time.sleep(3)
        ensure_embedded_server(pgdata)
        restarted = time.monotonic()
        status = wait_for_job(env.app_url, job.job_id, timeout_s=900, log=lambda _msg: None)
        took = time.monotonic() - restarted
        log_text = services.logs["daemon"].read_text(errors="replace")[-4000:]
        assert (status.stage, status.status) == (stage_graph.LAST_JOB_STAGE, "done"), log_text
        for variant in status.variants:
            assert (variant.stage, variant.status) == (stage_graph.LAST_VARIANT_STAGE, "done"), variant.error
        _assert_settled(engine, [str(job.job_id)], log_text)
    print(f"\nafter the server restart the job finished in {took:.0f} s")


def embedded_server_state_for(admin_url: str, state_of) -> os.PathLike:
    """The data directory of the test server (its socket directory is the data directory)."""
    from urllib.parse import parse_qs, urlsplit

    host = parse_qs(urlsplit(admin_url).query).get("host", [""])[0]
    state = state_of(Path(host)) if host else None
    if state is None or not state.running:
        pytest.skip("the test server is not an embedded one this test can restart")
    return state.pgdata


@pytest.mark.e2e
def test_a_run_cancelled_mid_stage_fails_for_good_and_a_manual_retry_finishes_it(pipeline_env, monkeypatch) -> None:
    """Cancelling a run in Dagster (the run marked CANCELING, its worker interrupted, as the run
    launcher does) fails the attempt for good; recovery leaves it alone; `retry` finishes the job."""
    with pipeline(monkeypatch, VP_FAULTS="img_gen:sleep=120:attempt=1") as (env, services):
        engine = get_engine(env.app_url)
        job = submit_sample(env.app_url, variants=1)
        key = str(job.variant_ids[0])
        _wait_for(lambda: _running_attempt(engine, key, "img_gen") is not None, 300, "img_gen running")
        attempt = _running_attempt(engine, key, "img_gen")
        with dg.DagsterInstance.get() as instance:
            instance.report_run_canceling(instance.get_run_by_id(attempt["run_id"]))
        os.kill(int(attempt["worker"].rsplit(":", 1)[1]), signal.SIGTERM)
        cancelled_at = time.monotonic()
        _wait_for(lambda: get_job_status(engine, job.job_id).status == "failed", 120, "the job to fail")
        noticed_s = time.monotonic() - cancelled_at
        time.sleep(3 * float(RECOVERY_ENV["VP_RECOVERY_INTERVAL_S"]))  # recovery ticks: nothing restarts it

        status = get_job_status(engine, job.job_id)
        assert (status.variants[0].stage, status.variants[0].status) == ("img_gen", "failed")
        assert status.variants[0].error == f"cancelled: run {attempt['run_id']} was cancelled in Dagster"
        assert (status.stage, status.status, status.error) == ("iou_eval", "failed", "all 1 variants failed")
        assert [(a["attempt"], a["outcome"], a["will_retry"]) for a in partition_state.attempts_of(engine, key)] == [
            (1, "failed", False)]
        assert wait_for_runs_to_settle(timeout_s=60) == 0
        with dg.DagsterInstance.get() as instance:
            assert instance.get_run_by_id(attempt["run_id"]).status == dg.DagsterRunStatus.CANCELED

    with pipeline(monkeypatch, VP_FAULTS="") as (env, services):  # the fault drill off
        [request] = recovery.request_retry(engine, key)
        assert (request.stage, request.previous) == ("img_gen", ("img_gen", "failed"))
        status = wait_for_job(env.app_url, job.job_id, timeout_s=600, log=lambda _msg: None)
        log_text = services.logs["daemon"].read_text(errors="replace")[-4000:]
        assert (status.stage, status.status) == (stage_graph.LAST_JOB_STAGE, "done"), log_text
        _assert_settled(engine, [str(job.job_id)], log_text)
        img_gen = [(a["attempt"], a["outcome"]) for a in partition_state.attempts_of(engine, key) if a["stage"] == "img_gen"]
        assert img_gen == [(1, "failed"), (1, "done")]  # the manual retry is a new round
    print(f"\ncancelled run: attempt failed for good {noticed_s:.1f} s after the interrupt")


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The run worker's process id, from the run's own RUN_START event."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START):
        if entry.dagster_event is not None and entry.dagster_event.pid:
            return entry.dagster_event.pid
    return None


@pytest.mark.e2e
def test_a_run_killed_before_its_first_stage_restarts_without_the_stall_rule(pipeline_env, monkeypatch) -> None:
    """The variant's run is frozen the moment its worker starts (before its first stage: a run
    worker spends seconds on imports and resources first), then SIGKILLed: a dead run, and no
    attempt in flight. With the stall rule at 600 s, only the recovery sensor's restart of a
    failed run's orphan (after the lease grace) can start the variant again in time."""
    from variant_pipeline.assets.jobs import RECOVERY_REASON_TAG

    with pipeline(monkeypatch, VP_STALL_AFTER_S="600") as (env, services):
        engine = get_engine(env.app_url)
        job = submit_sample(env.app_url, variants=1)
        key = str(job.variant_ids[0])
        with dg.DagsterInstance.get() as instance:
            def started_pid() -> int | None:
                runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": key},
                                                       statuses=[dg.DagsterRunStatus.STARTED]))
                return _worker_pid(instance, runs[0].run_id) if runs else None

            deadline = time.monotonic() + 180
            while (pid := started_pid()) is None:
                assert time.monotonic() < deadline, "the variant's run did not start"
                time.sleep(0.05)
            os.kill(pid, signal.SIGSTOP)
            assert not partition_state.attempts_of(engine, key), "the worker reached its first stage before the test"
            os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        _wait_for(lambda: bool(partition_state.attempts_of(engine, key)), 240, "the variant's first attempt")
        moving_after_s = time.monotonic() - killed_at

        status = wait_for_job(env.app_url, job.job_id, timeout_s=600, log=lambda _msg: None)
        log_text = services.logs["daemon"].read_text(errors="replace")[-4000:]
        assert (status.stage, status.status) == (stage_graph.LAST_JOB_STAGE, "done"), log_text
        _assert_settled(engine, [str(job.job_id)], log_text)
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": key}))
        assert sorted(r.status.value for r in runs) == ["FAILURE", "SUCCESS"]  # the killed run and its restart
        assert [r.tags.get(RECOVERY_REASON_TAG) for r in runs if r.status == dg.DagsterRunStatus.SUCCESS] == [
            "run_failed"]
        assert moving_after_s < 600  # the stall rule would have taken 600 s or more
    print(f"\nrun killed before its first stage: its variant moving again {moving_after_s:.0f} s after the kill "
          f"(lease grace {RECOVERY_ENV['VP_RUN_LEASE_GRACE_S']} s in these settings)")
