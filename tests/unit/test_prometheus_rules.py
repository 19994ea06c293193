"""The shipped Prometheus files, checked by Prometheus' own promtool (installed by scripts/setup.sh):
the scrape config and rules parse, and each alert fires on the series it is for and stays quiet
on healthy ones (deploy/prometheus/variant_pipeline_rules_test.yml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/setup.sh (it installs Debian's prometheus package)"
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [("check", "rules", "variant_pipeline_rules.yml"),
                                  ("check", "config", "prometheus.yml"),
                                  ("test", "rules", "variant_pipeline_rules_test.yml")])
def test_promtool_accepts_the_shipped_files(args: tuple[str, ...]) -> None:
    result = _promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_tests_can_fail(tmp_path: Path) -> None:
    # The same tests against a rule that no longer fires: promtool must report it.
    rules = (DEPLOY / "variant_pipeline_rules.yml").read_text()
    (tmp_path / "variant_pipeline_rules.yml").write_text(
        rules.replace("expr: variant_pipeline_stuck > 0", "expr: variant_pipeline_stuck > 100"))
    shutil.copy(DEPLOY / "variant_pipeline_rules_test.yml", tmp_path)
    result = _promtool("test", "rules", "variant_pipeline_rules_test.yml", cwd=tmp_path)
    assert result.returncode != 0 and "VariantPipelineStuck" in result.stdout + result.stderr
