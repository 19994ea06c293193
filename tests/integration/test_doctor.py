"""`variant-pipeline doctor` on a deployment that works, then with each of its checks broken once."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from variant_pipeline.cli import main
from variant_pipeline.config import load_settings
from variant_pipeline.data.engine import ensure_database, with_database
from variant_pipeline.deployment import DAGSTER_YAML
from variant_pipeline.ops.doctor import run_checks


@pytest.fixture
def deployment(pipeline_env, monkeypatch):
    """The pipeline's database migrated, a Dagster home as `demo` writes it, and a daemon heartbeat."""
    home = pipeline_env.home / "dagster"
    home.mkdir()
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("VP_DAGSTER_STORAGE_URL", pipeline_env.dagster_url)
    beat(time.time())
    return pipeline_env


def beat(at: float) -> None:
    """What a running daemon writes every few seconds (Dagster's own record type)."""
    from dagster._daemon.types import DaemonHeartbeat

    with dg.DagsterInstance.get() as instance:
        instance.add_daemon_heartbeat(DaemonHeartbeat(timestamp=at, daemon_type="SENSOR", daemon_id="test"))


def _checks(**kwargs) -> dict[str, object]:
    return {c.name: c for c in run_checks(load_settings(), **kwargs)}


def test_a_working_deployment_passes_and_names_the_tiny_models(deployment, capsys) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == len(run_checks(load_settings())) and "FAIL" not in out
    assert "ok   model vlm_model: the tiny random-weight bundle" in out
    assert "ok   dagster daemon: heartbeat" in out


def _failing(name: str, **kwargs) -> str:
    checks = _checks(**kwargs)
    assert not checks[name].ok, checks[name]
    assert [c for c in checks.values() if not c.ok] == [checks[name]]  # only the broken one
    return checks[name].detail


def test_each_check_fails_once_with_what_to_do(deployment, pg_admin_url, monkeypatch, tmp_path: Path) -> None:
    with monkeypatch.context() as m:
        fresh = "vp_doctor_fresh"
        ensure_database(pg_admin_url, fresh)
        m.setenv("DATABASE_URL", with_database(pg_admin_url, fresh))
        assert "migration(s) pending (001_schema.sql...); run `variant-pipeline db upgrade`" in _failing("database")
    with monkeypatch.context() as m:
        m.setenv("VP_DAGSTER_STORAGE_URL", deployment.app_url)
        checks = _checks()
        assert "pipeline's own database" in checks["dagster storage"].detail and not checks["dagster daemon"].ok
    with monkeypatch.context() as m:
        m.setenv("VP_VLM_MODEL", str(tmp_path / "no-such-model"))
        assert "neither a file nor a folder here" in _failing("model vlm_model")
    with monkeypatch.context() as m:
        m.setenv("VP_TEXT_MODEL", "someorg/some-model-not-cached")
        assert "not in the local Hugging Face cache" in _failing("model text_model")
    with monkeypatch.context() as m:
        m.setenv("VP_TESSERACT_CMD", str(tmp_path / "tesseract"))
        assert "not found: install tesseract-ocr" in _failing("tesseract")
    with monkeypatch.context() as m:
        (tmp_path / "tessdata").mkdir()
        m.setenv("TESSDATA_PREFIX", str(tmp_path / "tessdata"))
        assert "lacks language data kor, eng" in _failing("tesseract")
    with monkeypatch.context() as m:
        m.setenv("VP_FONT_PATH", str(tmp_path / "none.ttf"))
        assert "does not exist" in _failing("fonts")
    with monkeypatch.context() as m:
        m.setenv("VP_MODEL_BACKEND", "ray")
        m.setenv("RAY_ADDRESS", "127.0.0.1:1")
        assert "is not reachable" in _failing("ray")
    assert "GiB free under" in _failing("disk", min_free_gb=1e9)


def test_live_partitions_over_the_budget_fail_their_check(deployment, monkeypatch) -> None:
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("job_variants", ["a", "b", "c"])
    assert "3 live variant partitions, within the budget of 10000" in _checks()["dagster partitions"].detail
    monkeypatch.setenv("VP_PARTITION_BUDGET", "2")
    assert "3 live variant partitions, 1 over the budget of 2: run `variant-pipeline prune`" in _failing(
        "dagster partitions")
    monkeypatch.setenv("VP_PARTITION_BUDGET", "0")
    assert _checks()["dagster partitions"].detail == "3 live variant partitions (no partition budget)"


def test_a_daemon_that_stopped_beating_fails_its_check(deployment) -> None:
    with dg.DagsterInstance.get() as instance:
        instance.wipe_daemon_heartbeats()
    assert "no heartbeat ever written" in _failing("dagster daemon")
    beat(time.time() - 600)
    assert re.search(r"last heartbeat 60\d s ago: the daemon is not running", _failing("dagster daemon"))


def test_the_disk_check_lists_an_object_store_root_and_names_a_missing_bucket(deployment, s3_env,
                                                                               monkeypatch) -> None:
    checks = _checks()
    assert checks["disk"].ok and s3_env["VP_ASSET_ROOT"] in checks["disk"].detail, checks["disk"]
    assert not (deployment.home / "assets").exists()
    monkeypatch.setenv("VP_ASSET_ROOT", "s3://vp-no-such-bucket/x")
    assert "bucket 'vp-no-such-bucket' does not exist" in _failing("disk")
