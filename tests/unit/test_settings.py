"""Settings from the environment: names, defaults, derived values, and one line per bad value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from variant_pipeline.config import (
    DEFAULT_FORBIDDEN_CLASSES,
    PROJECT_ROOT,
    SettingsError,
    apply_offline_defaults,
    load_settings,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting of the outer environment, and a working directory of the test's own."""
    for name in list(os.environ):
        if name.startswith(("VP_", "AWS_")) or name in ("DATABASE_URL", "RAY_ADDRESS", "VARIANT_PIPELINE_HOME"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings()
    home = (PROJECT_ROOT / "var").resolve()
    assert (settings.home, settings.asset_root, settings.models_dir) == (
        home, str(home / "assets"), home / "models" / "tiny")
    assert (settings.database_url, settings.ray_address, settings.model_backend, settings.forbidden_classes) == (
        None, None, "local", DEFAULT_FORBIDDEN_CLASSES)
    assert (settings.max_attempts, settings.partition_budget, settings.prune_cron, settings.ui_url) == (
        3, 10_000, "0 3 * * *", "http://127.0.0.1:3000")
    s3 = settings.s3
    assert (s3.endpoint_url, s3.region, s3.request_timeout_s, s3.retry_timeout_s) == (None, None, 30.0, 15.0)
    assert settings.environ == {}


def test_names_derived_values_and_empty_means_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {"VARIANT_PIPELINE_HOME": "home", "VP_MODELS_DIR": "models",
                        "DATABASE_URL": "postgresql://h/d", "RAY_ADDRESS": "ray://h:10001",
                        "VP_FORBIDDEN_CLASSES": " cup, bowl ,,",
                        "VP_MODEL_BACKEND": " Ray ", "VP_CHECK_WCAG_LEVEL": "aaa", "VP_PARTITION_BUDGET": "2_000",
                        "VP_PRUNE_CRON": "", "VP_DEVICE": "", "VP_ALLOW_NETWORK": "yes"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.home, settings.asset_root, settings.models_dir) == (
        tmp_path / "home", str(tmp_path / "home" / "assets"), tmp_path / "models")
    assert (settings.database_url, settings.ray_address) == ("postgresql://h/d", "ray://h:10001")
    assert settings.forbidden_classes == ("cup", "bowl")
    assert (settings.model_backend, settings.check_wcag_level, settings.partition_budget) == ("ray", "AAA", 2000)
    assert (settings.prune_cron, settings.device, settings.allow_network) == ("0 3 * * *", "auto", True)
    assert "VP_DEVICE" not in settings.environ and settings.environ["VP_MODEL_BACKEND"] == " Ray "


def test_s3_options_fall_back_to_the_aws_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws.example:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "aws-key")
    monkeypatch.setenv("VP_S3_ACCESS_KEY_ID", "vp-key")
    monkeypatch.setenv("VP_S3_REGION", "")  # empty: unset, so the AWS chain answers
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("VP_S3_TIMEOUT_S", "7")
    s3 = load_settings().s3
    assert (s3.endpoint_url, s3.access_key_id, s3.region, s3.request_timeout_s) == (
        "http://aws.example:9000", "vp-key", "eu-west-1", 7.0)
    monkeypatch.setenv("AWS_REGION", "us-east-2")
    assert load_settings().s3.region == "us-east-2"


def test_only_the_process_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("VP_DEVICE=cuda\n")
    for name in ("VP_S3", "VP_ENVIRON", "VP_HOME"):  # not variables: s3, environ and home are not read by them
        monkeypatch.setenv(name, "not json")
    settings = load_settings()
    assert settings.device == "auto" and settings.s3.endpoint_url is None
    assert settings.home == (PROJECT_ROOT / "var").resolve()
    assert settings.environ == {"VP_S3": "not json", "VP_ENVIRON": "not json", "VP_HOME": "not json"}


def test_secrets_stay_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VP_OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.setenv("VP_S3_SECRET_ACCESS_KEY", "s3-secret")
    settings = load_settings()
    assert settings.openai_api_key == "sk-openai-secret" and settings.s3.secret_access_key == "s3-secret"
    assert "sk-openai-secret" not in repr(settings) and "s3-secret" not in repr(settings)


def test_changed_with_model_copy_and_otherwise_frozen() -> None:
    settings = load_settings()
    changed = settings.model_copy(update={"max_attempts": 5})
    assert (changed.max_attempts, settings.max_attempts) == (5, 3)
    with pytest.raises(ValueError, match="frozen"):
        settings.max_attempts = 5  # type: ignore[misc]


@pytest.mark.parametrize(("name", "value", "message"), [
    ("VP_ASSETS_DIR", "/data", "VP_ASSETS_DIR was renamed VP_ASSET_ROOT (a directory or s3://bucket/prefix)"),
    ("VP_MAX_ATTEMPTS", "0", "VP_MAX_ATTEMPTS must be at least 1, got 0"),
    ("VP_SEED_BASE", "fifty", "VP_SEED_BASE must be an integer, got 'fifty'"),
    ("VP_DETECTOR_CONF", "high", "VP_DETECTOR_CONF must be a number, got 'high'"),
    ("VP_PRUNE_ROWS", "maybe", "VP_PRUNE_ROWS must be a boolean (1/0/true/false), got 'maybe'"),
    ("VP_PARTITION_BUDGET", "+3", "VP_PARTITION_BUDGET must be a whole number of live variant partitions "
                                  "(0: no budget), got '+3'"),
    ("VP_LEASE_TIMEOUT_S", "-1", "VP_LEASE_TIMEOUT_S must be a finite number of seconds, 0 or more; got -1.0"),
    ("VP_UI_URL", "localhost:3000", "VP_UI_URL must be an http:// or https:// URL, got 'localhost:3000'"),
    ("AWS_ENDPOINT_URL", "minio:9000", "VP_S3_ENDPOINT_URL must be an http:// or https:// URL, got 'minio:9000'"),
    ("VP_S3_TIMEOUT_S", "0", "VP_S3_TIMEOUT_S must be a finite number of seconds, more than 0; got 0.0"),
    ("VP_S3_RETRY_TIMEOUT_S", "soon", "VP_S3_RETRY_TIMEOUT_S must be a number, got 'soon'"),
    ("VP_ASSET_ROOT", "ftp://host/x", "VP_ASSET_ROOT: asset root 'ftp://host/x': only a local directory or "
                                      "s3://bucket[/prefix] is supported"),
])
def test_a_bad_value_is_one_line_that_names_its_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                         message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value) == message


def test_the_offline_switch_is_checked_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VP_MAX_ATTEMPTS", "0")  # another bad setting is not the entry points' concern here
    monkeypatch.setenv("VP_ALLOW_NETWORK", "1")
    apply_offline_defaults()
    monkeypatch.setenv("VP_ALLOW_NETWORK", "sometimes")
    with pytest.raises(SettingsError) as refused:
        apply_offline_defaults()
    assert str(refused.value) == "VP_ALLOW_NETWORK must be a boolean (1/0/true/false), got 'sometimes'"
