"""The soak's schedule and its round rule, without a database (scripts/soak_schedule.py,
scripts/soak_checks.py). The checks against a real PostgreSQL: tests/integration/test_soak_checker.py."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import soak_checks as checks  # noqa: E402
import soak_schedule  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    def build(seed: int) -> list[dict]:
        return [a.to_dict() for a in soak_schedule.build_schedule(
            seed=seed, duration_s=600, backend="local", jobs_per_min=2, faults_per_min=2)]

    assert build(7) == build(7)
    assert build(7) != build(8)


def test_faults_overlap_across_kinds_never_within_one_end_in_time_and_cover_every_kind() -> None:
    actions = soak_schedule.build_schedule(seed=3, duration_s=1800, backend="ray", jobs_per_min=1,
                                           faults_per_min=2)
    faults = [a for a in actions if a.is_fault]
    ends = {a.params["of"]: a.t for a in actions if a.kind == "fault_end"}
    windows = sorted((a.t, ends.get(a.id, a.t), a.kind) for a in faults)
    for kind in {k for _s, _e, k in windows}:
        own = [(s, e) for s, e, k in windows if k == kind]
        for (_s1, e1), (s2, _e2) in zip(own, own[1:], strict=False):
            assert e1 < s2, kind
    assert any(s2 < e1 for (_s1, e1, _k1), (s2, _e2, _k2) in zip(windows, windows[1:], strict=False))
    assert all(end <= 1800 for _start, end, _kind in windows)
    assert {a.kind for a in faults} == set(soak_schedule.FAULT_KINDS_RAY)
    low, high = soak_schedule.FAULT_DURATIONS["stop_worker"]
    for a in faults:
        if a.kind == "stop_worker":
            assert low <= a.params["duration_s"] <= high
    # Every producer job's later variants come after it, within the soak.
    ids = {a.id: a for a in actions}
    for a in actions:
        if a.kind == "producer_variants":
            assert ids[a.params["of"]].kind == "producer_job" and ids[a.params["of"]].t < a.t <= 1800


def test_local_backend_has_no_ray_faults() -> None:
    actions = soak_schedule.build_schedule(seed=1, duration_s=3600, backend="local", jobs_per_min=1,
                                           faults_per_min=3)
    assert {a.kind for a in actions if a.is_fault} == set(soak_schedule.FAULT_KINDS_LOCAL)


def test_an_object_store_soak_adds_its_restarts_and_leaves_the_disk_schedule_as_it_was() -> None:
    def build(root: str) -> list:
        return soak_schedule.build_schedule(seed=5, duration_s=3600, backend="local", jobs_per_min=1,
                                            faults_per_min=3, asset_root=root)

    on_disk, in_bucket = build("disk"), build("s3")
    assert {a.kind for a in in_bucket if a.is_fault} == {*soak_schedule.FAULT_KINDS_LOCAL, "s3_restart"}
    assert [a.to_dict() for a in on_disk] == [a.to_dict() for a in soak_schedule.build_schedule(
        seed=5, duration_s=3600, backend="local", jobs_per_min=1, faults_per_min=3)]
    low, high = soak_schedule.FAULT_DURATIONS["s3_restart"]
    assert all(low <= a.params["duration_s"] <= high for a in in_bucket if a.kind == "s3_restart")


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("3m", 180), ("60m", 3600), ("1h30m", 5400), ("45", 45)])
def test_durations(text: str, seconds: float) -> None:
    assert soak_schedule.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "3x", "m3", "3m junk"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        soak_schedule.parse_duration(text)


# --- the round rule ---------------------------------------------------------------------------


def _attempt(attempt_id: int, attempt: int, run: str, outcome: str = "done", finished: float | None = None,
             stage: str = "img_gen", partition: str = "v1") -> checks.Attempt:
    return checks.Attempt(attempt_id, partition, "variant", stage, attempt, run, outcome,
                          _at(finished if finished is not None else attempt_id * 10))


def _run(run_id: str, launched_by: str | None, key: str | None, created: float) -> checks.RunInfo:
    return checks.RunInfo(run_id, launched_by, key, _at(created))


RUNS = {
    "r1": _run("r1", "outbox_sensor", "variant:v1:from:img_gen:event:1", 0),
    "dup": _run("dup", "outbox_sensor", "variant:v1:from:img_gen:event:1", 5),  # the same key again
    "stale": _run("stale", "outbox_sensor", "variant:v1:from:img_gen:event:2", 5),  # created before r1 committed
    "hand": _run("hand", None, None, 30),
    "retry": _run("retry", "outbox_sensor", "variant:v1:from:img_gen:event:9", 45),  # after `retry`
    "rec": _run("rec", "recovery_sensor", "retry:variant:v1:img_gen:after-attempt:1:1", 12),
}


def test_one_commit_per_round_with_retries_counting_on_is_clean() -> None:
    attempts = [_attempt(1, 1, "r1", "lost"), _attempt(2, 2, "rec", "done")]
    assert checks.round_violations(attempts, RUNS) == []


def test_two_commits_in_one_round_are_reported() -> None:
    attempts = [_attempt(1, 1, "r1", "done"), _attempt(2, 2, "rec", "done")]
    [message] = checks.round_violations(attempts, RUNS)
    assert message.startswith("committed twice in one round") and "#1" in message and "#2" in message


def test_a_request_launched_twice_that_redoes_the_work_is_reported() -> None:
    attempts = [_attempt(1, 1, "r1", "done", finished=10), _attempt(2, 1, "dup", "done", finished=20)]
    [message] = checks.round_violations(attempts, RUNS)
    assert message.startswith("stage redone by a duplicated request")


def test_a_pipeline_run_created_before_the_commit_it_redoes_is_stale() -> None:
    attempts = [_attempt(1, 1, "r1", "done", finished=10), _attempt(2, 1, "stale", "done", finished=20)]
    [message] = checks.round_violations(attempts, RUNS)
    assert message.startswith("stage redone by a stale run")


def test_hand_runs_and_requested_retries_open_new_rounds() -> None:
    attempts = [_attempt(1, 1, "r1", "done", finished=10), _attempt(2, 1, "hand", "done", finished=40),
                _attempt(3, 1, "retry", "failed", finished=50), _attempt(4, 2, "rec", "done", finished=60)]
    assert checks.round_violations(attempts, RUNS) == []


def test_rounds_are_per_partition_and_stage() -> None:
    attempts = [_attempt(1, 1, "r1", "done"), _attempt(2, 1, "r1", "done", stage="vlm_analyze"),
                _attempt(3, 1, "hand", "done", partition="v2")]
    assert checks.round_violations(attempts, RUNS) == []


def test_a_run_dagster_does_not_know_counts_as_its_own_request() -> None:
    attempts = [_attempt(1, 1, "gone-1", "done"), _attempt(2, 1, "gone-2", "done")]
    assert checks.round_violations(attempts, {}) == []
    attempts = [_attempt(1, 1, "gone-1", "done"), _attempt(2, 1, "gone-1", "done")]
    assert len(checks.round_violations(attempts, {})) == 1


def test_skipped_rows_are_not_attempts_and_do_not_open_rounds() -> None:
    attempts = [_attempt(1, 1, "r1", "done"), _attempt(2, 1, "dup", "skipped"), _attempt(3, 2, "rec", "done")]
    [message] = checks.round_violations(attempts, RUNS)
    assert message.startswith("committed twice in one round")
    assert checks.round_violations([_attempt(1, 1, "r1", "done"), _attempt(2, 1, "dup", "skipped")], RUNS) == []


def test_recovery_counts_the_partitions_a_fault_stopped_from_when_recovery_could_begin() -> None:
    import soak  # noqa: PLC0415

    A = soak.Attempt
    attempts = [
        A("busy", "img_gen", 100.0, 110.0, "lost"),  # in progress when both faults began, stopped...
        A("busy", "img_gen", 150.0, 160.0, "done"),  # ...and moving again at 150
        A("slow", "vlm_judge", 100.0, 190.0, "done"),  # in progress, not stopped: a slow stage that went on
        A("slow", "planner", 191.0, 195.0, "done"),
        A("queued-behind", "img_gen", 170.0, 175.0, "done"),  # not in progress at the fault: the backlog
        A("frozen", "ocr", 100.0, 139.0, "lost"),  # the frozen worker's attempt, recorded lost at 139...
        A("frozen", "ocr", 140.0, 145.0, "done"),  # ...another run took the partition over at 140
    ]
    restart = {"kind": "kill_daemon", "start": 105.0, "end": 130.0}
    stop = {"kind": "stop_worker", "start": 105.0, "end": 200.0, "target": {"partition": "frozen"}}
    never = {"kind": "pg_restart", "start": 152.0, "end": 155.0}
    attempts_never = [*attempts[:1], A("busy", "img_gen", 150.0, None, "running")]  # its 2nd attempt hangs
    skipped = {"kind": "kill_worker", "start": 1.0, "end": 1.0, "skipped": True}
    soak.moving_again([restart, skipped], attempts, terminal={})
    soak.moving_again([stop], attempts, terminal={})
    assert restart["recovery_s"] == 20.0  # from the restart (130) until 'busy' and 'frozen' both moved (150)
    assert restart["affected_partitions"] == 2 and restart["in_flight_partitions"] == 3
    assert restart["in_flight_recovery_s"] == 61.0  # 'slow' only moved on at 191, its stage done
    assert restart["slowest"]["partition"] == "busy" and restart["slowest"]["waited_s"] == 20.0
    assert restart["slowest"]["attempts"][0] == ["img_gen", -5.0, 5.0, "lost", None]
    assert restart["slowest"]["runs"] == []
    assert stop["recovery_s"] == 35.0  # its target only, from the stop (105) until another run took it (140)
    assert skipped["recovery_s"] is None and skipped["slowest"] is None
    soak.moving_again([never], attempts_never, terminal={})
    assert never["recovery_s"] is None and never["slowest"]["waited_s"] is None
    soak.moving_again([never], attempts_never, terminal={"busy": 170.0})  # it finished instead
    assert never["recovery_s"] == 15.0
    # A run that died between stages (no attempt in progress) stopped its partition too.
    between = [A("gap", "img_gen", 90.0, 99.0, "done"), A("gap", "ocr", 160.0, 170.0, "done")]
    dead_run, went_on = soak.RunSpan("gap", 80.0, 131.0, False), soak.RunSpan("gap", 80.0, 131.0, True)
    soak.moving_again([restart], attempts + between, terminal={}, runs=[went_on])
    assert restart["recovery_s"] == 20.0 and restart["affected_partitions"] == 2
    soak.moving_again([restart], attempts + between, terminal={}, runs=[dead_run])
    assert restart["recovery_s"] == 30.0 and restart["slowest"]["partition"] == "gap"
    requeued = soak.RunSpan("gap", 160.0, 171.0, True, "r2", created=140.0, why="run_failed #1")
    soak.moving_again([restart], attempts + between, terminal={}, runs=[dead_run, requeued])
    # The slowest partition's runs: queued, started, ended (from the fault's start), and why.
    assert restart["slowest"]["runs"] == [["", None, -25.0, 26.0, "not success", ""],
                                          ["r2", 35.0, 55.0, 66.0, "success", "run_failed #1"]]
    # ...unless the partition had finished before the fault: its run was only wrapping up.
    soak.moving_again([restart], attempts + between, terminal={"gap": 100.0}, runs=[dead_run])
    assert restart["recovery_s"] == 20.0 and restart["affected_partitions"] == 2
    # A fault that begins while a worker fault's target waits did not stop that target.
    frozen = {"kind": "stop_worker", "start": 102.0, "end": 200.0, "target": {"partition": "frozen"}}
    soak.moving_again([frozen, restart], attempts, terminal={})
    assert frozen["recovery_s"] == 38.0 and restart["affected_partitions"] == 1  # 'busy' only
    # A partition whose lost attempt spent its retry budget is settled when it is marked failed
    # (a person's later retry is not recovery's doing).
    spent = [A("spent", "img_gen", 100.0, 110.0, "lost"), A("spent", "img_gen", 400.0, 410.0, "done")]
    soak.moving_again([restart], spent, terminal={})
    assert restart["recovery_s"] == 270.0
    soak.moving_again([restart], spent, terminal={}, failed={"spent": [90.0, 125.0]})
    assert restart["recovery_s"] == 0.0  # marked failed at 125, during the fault: settled by its end
    soak.moving_again([restart], spent, terminal={}, failed={"spent": [90.0, 140.0]})
    assert restart["recovery_s"] == 10.0
    soak.moving_again([restart], attempts, terminal={})
    assert soak.recovery_by_kind([restart, stop, never, skipped])["kill_daemon"] == {
        "n": 1, "recovered": 1, "median_s": 20.0, "max_s": 20.0, "in_flight_max_s": 61.0}


def test_a_partition_that_moved_again_before_its_fault_ended_waited_nothing() -> None:
    """Found by the 30-minute ray soak of seed 50872: a daemon kill's lost attempt was retried and
    finished by the second daemon 19 s in, before the killed daemon came back at 22 s, and a hand
    re-run minutes later was charged to the fault (239.8 s)."""
    import soak  # noqa: PLC0415

    A = soak.Attempt
    kill = {"kind": "kill_daemon", "start": 105.0, "end": 130.0}
    attempts = [A("p", "readability_eval", 100.0, 110.0, "lost"),
                A("p", "readability_eval", 115.0, 116.0, "done"),  # retried during the fault...
                A("p", "iou_eval", 116.0, 117.0, "done"),  # ...and finished
                A("p", "readability_eval", 400.0, 401.0, "done")]  # a person's re-run, much later
    soak.moving_again([kill], attempts, terminal={"p": 401.0})
    assert kill["affected_partitions"] == 1 and kill["recovery_s"] == 0.0
    # An attempt begun during the fault that the fault then cut short is no sign of moving again.
    cut = [attempts[0], A("p", "readability_eval", 115.0, 125.0, "lost"), attempts[3]]
    soak.moving_again([kill], cut, terminal={"p": 401.0})
    assert kill["recovery_s"] == 270.0


def test_a_run_wrapping_up_a_finished_partition_stopped_nothing_though_it_was_rerun_later() -> None:
    """The same soak: a run killed after its last stage (all done, RUN_SUCCESS never logged) was
    counted as stopping its partition, because the partition's finish time, re-set by a later
    hand re-run, was after the fault (178.1 s for a second daemon, 125 s for a code-server kill)."""
    import soak  # noqa: PLC0415

    from variant_pipeline.stages import LAST_JOB_STAGE, LAST_VARIANT_STAGE  # noqa: PLC0415

    A = soak.Attempt
    kill = {"kind": "kill_code_server", "start": 105.0, "end": 105.0}
    for key, last in (("variant", LAST_VARIANT_STAGE), ("job", LAST_JOB_STAGE)):
        attempts = [A(key, "planner", 90.0, 95.0, "done", "r1"), A(key, last, 95.0, 99.0, "done", "r1"),
                    A(key, "planner", 400.0, 401.0, "done", "r2")]
        wrapping_up = soak.RunSpan(key, 20.0, 131.0, False, "r1")  # started long before the fault
        soak.moving_again([kill], attempts, terminal={key: 401.0}, runs=[wrapping_up])
        assert kill["affected_partitions"] == 0 and kill["recovery_s"] == 0.0
        # Between stages (its last stage not reached) the same run did stop its partition.
        soak.moving_again([kill], attempts[:1] + attempts[2:], terminal={key: 401.0}, runs=[wrapping_up])
        assert kill["affected_partitions"] == 1 and kill["recovery_s"] == 295.0
        # The report lists the run that was going when the fault began, however long before it started.
        assert kill["slowest"]["runs"] == [["r1", None, -85.0, 26.0, "not success", ""]]
