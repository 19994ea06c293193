"""The layer rules of DESIGN.md hold: import-linter's contracts in pyproject.toml are all kept.

A forbidden import (say ``from variant_pipeline.handlers import ...`` in a sensor, or ``import
dagster`` in stage work) makes this test fail with import-linter's report of the chain.
"""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_layer_contract_is_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout


def test_the_contracts_cover_every_layer() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    sources = {module for c in contracts for module in c.get("source_modules", [])}
    assert {"variant_pipeline.stages", "variant_pipeline.work", "variant_pipeline.models",
            "variant_pipeline.data", "variant_pipeline.state", "variant_pipeline.sensors",
            "variant_pipeline.handlers"} <= sources
