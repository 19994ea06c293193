"""The layer rules hold: import-linter's contracts in pyproject.toml are all kept.

A forbidden import (say ``from variant_pipeline.handlers import ...`` in a sensor, or ``import
dagster`` in stage work) makes this test fail with import-linter's report of the chain.
"""

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "variant_pipeline"
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_every_layer_contract_is_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


def test_every_top_level_module_is_the_source_of_a_contract() -> None:
    top_level = {f"variant_pipeline.{path.stem}" for path in PACKAGE.iterdir()
                 if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()}
    sources = {module for c in CONTRACTS for module in c.get("source_modules", [])}
    assert top_level - sources == set(), "modules no contract says anything about"


def test_stage_work_and_handlers_name_no_model_even_for_annotations() -> None:
    """import-linter leaves out imports under ``if TYPE_CHECKING:`` (they load nothing at run time).
    Stage work and handlers must not name what their contracts forbid even there: stage work
    declares the model it needs as a Protocol (``work/vlm.py``'s ``VlmGenerate``)."""
    graph = grimp.build_graph("variant_pipeline", include_external_packages=True,
                              exclude_type_checking_imports=False, cache_dir=None)
    for package in ("variant_pipeline.work", "variant_pipeline.handlers"):
        [contract] = [c for c in CONTRACTS if c.get("source_modules") == [package]]
        forbidden = contract["forbidden_modules"]
        named = {(module, imported) for module in {package} | graph.find_descendants(package)
                 for imported in graph.find_modules_directly_imported_by(module)
                 if any(imported == f or imported.startswith(f"{f}.") for f in forbidden)}
        assert named == set(), f"{contract['name']}: broken by these imports, TYPE_CHECKING ones included"
