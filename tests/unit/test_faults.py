"""Fault drills (VP_FAULTS) and the recovery settings: what parses, what is refused and why."""

from __future__ import annotations

import time

import pytest

from variant_pipeline.config import load_settings
from variant_pipeline.faults import Fault, InjectedFault, inject, parse_faults

# --- parse_faults -------------------------------------------------------------------------------


def test_unset_or_empty_means_no_faults() -> None:
    assert parse_faults(None) == ()
    assert parse_faults("") == ()
    assert parse_faults(" ; ;") == ()


def test_the_documented_example_parses() -> None:
    assert parse_faults("vlm_analyze:raise:variant=2;yolo_detect:sleep=30:attempt=1") == (
        Fault("vlm_analyze", "raise", 0.0, attempt=None, variant=2),
        Fault("yolo_detect", "sleep", 30.0, attempt=1, variant=None),
    )


@pytest.mark.parametrize(("spec", "expected"), [
    ("img_gen:raise", Fault("img_gen", "raise")),
    ("img_gen:hang", Fault("img_gen", "hang")),
    ("img_gen:kill", Fault("img_gen", "kill")),
    ("ocr_eval:sleep=0.5", Fault("ocr_eval", "sleep", 0.5)),
    ("ad_copy_gen_kor:raise:attempt=2", Fault("ad_copy_gen_kor", "raise", attempt=2)),
    ("overlay:raise:attempt=1,variant=3", Fault("overlay", "raise", attempt=1, variant=3)),
    ("overlay:raise:attempt=1:variant=3", Fault("overlay", "raise", attempt=1, variant=3)),
    ("  planner : kill : variant=1 ", Fault("planner", "kill", variant=1)),
])
def test_each_action_and_condition_parses(spec: str, expected: Fault) -> None:
    assert parse_faults(spec) == (expected,)


@pytest.mark.parametrize(("spec", "message"), [
    ("img_gen", "expected STAGE:ACTION"),
    ("upscale:raise", "unknown stage 'upscale'"),
    ("img_gen:explode", "action must be one of raise, hang, sleep, kill"),
    ("img_gen:sleep", "give sleep=SECONDS"),
    ("img_gen:raise=3", "a value for sleep only"),
    ("img_gen:sleep=soon", "sleep=soon is not a number of seconds"),
    ("img_gen:sleep=-1", "sleep=-1 is not a number of seconds"),
    ("img_gen:sleep=nan", "sleep=nan is not a number of seconds"),
    ("img_gen:raise:attempt", "condition 'attempt' must be attempt=N or variant=N"),
    ("img_gen:raise:attempt=x", "must be attempt=N or variant=N"),
    ("img_gen:raise:attempt=-1", "must be attempt=N or variant=N"),
    ("img_gen:raise:attempt=²", "must be attempt=N or variant=N"),
    ("img_gen:raise:run=2", "condition 'run=2' must be attempt=N or variant=N"),
])
def test_bad_specs_are_refused_with_a_message_naming_the_entry(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="VP_FAULTS") as error:
        parse_faults(f"planner:raise;{spec}")
    assert message in str(error.value)
    assert repr(spec.strip()) in str(error.value)  # which entry was wrong


# --- applies / inject ---------------------------------------------------------------------------


def test_a_fault_applies_to_its_stage_attempt_and_variant_only() -> None:
    fault = Fault("overlay", "raise", attempt=2, variant=3)
    assert fault.applies("overlay", 2, 3)
    assert not fault.applies("planner", 2, 3)
    assert not fault.applies("overlay", 1, 3)
    assert not fault.applies("overlay", 2, 1)
    assert not fault.applies("overlay", 2, None)  # a job stage has no variant

    anywhere = Fault("overlay", "raise")
    assert anywhere.applies("overlay", 1, 1) and anywhere.applies("overlay", 7, None)
    assert Fault("overlay", "raise", attempt=1).applies("overlay", 1, 5)
    assert not Fault("overlay", "raise", attempt=1).applies("overlay", 2, 5)
    assert Fault("overlay", "raise", variant=2).applies("overlay", 9, 2)


def test_raise_raises_only_where_it_applies() -> None:
    faults = parse_faults("vlm_analyze:raise:variant=2,attempt=1")
    with pytest.raises(InjectedFault, match="vlm_analyze raised on attempt 1"):
        inject(faults, "vlm_analyze", 1, 2)
    inject(faults, "vlm_analyze", 2, 2)  # the retry succeeds
    inject(faults, "vlm_analyze", 1, 1)  # another variant
    inject(faults, "yolo_detect", 1, 2)  # another stage


def test_sleep_pauses_then_returns() -> None:
    faults = parse_faults("planner:sleep=0.2")
    started = time.monotonic()
    inject(faults, "planner", 1, 1)
    assert 0.19 <= time.monotonic() - started < 1.0
    started = time.monotonic()
    inject(faults, "overlay", 1, 1)  # not this stage: no pause
    assert time.monotonic() - started < 0.05


# --- settings -----------------------------------------------------------------------------------


def test_stage_timeouts_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VP_STAGE_TIMEOUTS", " img_gen=600, ocr_eval=60.5 ,")
    monkeypatch.setenv("VP_STAGE_TIMEOUT_S", "90")
    settings = load_settings()
    assert settings.stage_timeouts == {"img_gen": 600.0, "ocr_eval": 60.5}
    assert settings.stage_timeout_s == 90.0


def test_recovery_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VP_STAGE_TIMEOUTS", "VP_MAX_ATTEMPTS", "VP_RETRY_BACKOFF_S", "VP_STALL_AFTER_S", "VP_FAULTS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.stage_timeouts, settings.max_attempts, settings.retry_backoff_s, settings.stall_after_s,
            settings.faults) == ({}, 3, 10.0, 300.0, "")


@pytest.mark.parametrize(("spec", "message"), [
    ("upscale=60", "unknown stage 'upscale'"),
    ("img_gen", "'img_gen' is not STAGE=SECONDS"),
    ("img_gen=soon", "'img_gen=soon' is not STAGE=SECONDS"),
    ("img_gen=0", "the limit of img_gen must be a finite number above 0"),
    ("img_gen=-5", "the limit of img_gen must be a finite number above 0"),
    ("img_gen=nan", "the limit of img_gen must be a finite number above 0"),
])
def test_bad_stage_timeouts_are_refused(monkeypatch: pytest.MonkeyPatch, spec: str, message: str) -> None:
    monkeypatch.setenv("VP_STAGE_TIMEOUTS", spec)
    with pytest.raises(ValueError, match="VP_STAGE_TIMEOUTS") as error:
        load_settings()
    assert message in str(error.value)


def test_max_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VP_MAX_ATTEMPTS", "5")
    assert load_settings().max_attempts == 5
    monkeypatch.setenv("VP_MAX_ATTEMPTS", "1")
    assert load_settings().max_attempts == 1
    for bad in ("0", "-2"):
        monkeypatch.setenv("VP_MAX_ATTEMPTS", bad)
        with pytest.raises(ValueError, match=f"VP_MAX_ATTEMPTS must be at least 1, got {bad}"):
            load_settings()
    monkeypatch.setenv("VP_MAX_ATTEMPTS", "three")
    with pytest.raises(ValueError, match="VP_MAX_ATTEMPTS must be an integer"):
        load_settings()


@pytest.mark.parametrize(("name", "value"), [
    ("VP_STALL_AFTER_S", "0"), ("VP_STALL_AFTER_S", "nan"), ("VP_RETRY_BACKOFF_S", "-1"),
    ("VP_STAGE_TIMEOUT_S", "inf"), ("VP_RECOVERY_INTERVAL_S", "0"),
])
def test_recovery_seconds_must_be_finite_and_in_range(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    from variant_pipeline.config import SettingsError, load_settings

    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"{name} must be a finite number of seconds"):
        load_settings()


def test_a_bad_fault_spec_fails_when_the_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from variant_pipeline.config import SettingsError, load_settings

    monkeypatch.setenv("VP_FAULTS", "img_gen:explode")
    with pytest.raises(SettingsError, match="action must be one of"):
        load_settings()


@pytest.mark.parametrize("value", ["8", "9000"])
def test_generated_image_size_must_pass_the_image_checks(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from variant_pipeline.config import SettingsError, load_settings

    monkeypatch.setenv("VP_IMAGE_WIDTH", value)
    with pytest.raises(SettingsError, match="VP_IMAGE_WIDTH must be between 16 and 8192 pixels"):
        load_settings()
