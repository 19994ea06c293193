"""Dagster's private names this project uses: still where we import them from, and used nowhere else.

After a Dagster upgrade this is the test that says which private name moved, and in which version.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import dagster
import pytest

from variant_pipeline.assets import dagster_internals
from variant_pipeline.assets.dagster_internals import PRIVATE_SYMBOLS, DagsterInternalsMoved

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("module", "name"), PRIVATE_SYMBOLS, ids=[f"{m}.{n}" for m, n in PRIVATE_SYMBOLS])
def test_private_symbol_is_still_there(module: str, name: str) -> None:
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"Dagster {dagster.__version__} moved or removed {module}.{name} ({exc}); "
                    f"update variant_pipeline/assets/dagster_internals.py")
    assert getattr(dagster_internals, name) is found


def test_a_moved_symbol_fails_naming_it_and_the_version() -> None:
    with pytest.raises(DagsterInternalsMoved) as info:
        dagster_internals._private("dagster._core.instance", "NoSuchName")
    message = str(info.value)
    assert "dagster._core.instance.NoSuchName" in message and f"Dagster {dagster.__version__}" in message
    with pytest.raises(DagsterInternalsMoved, match="dagster._no_such_module.X"):
        dagster_internals._private("dagster._no_such_module", "X")


def _private_dagster_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.startswith("dagster._")]
    return found


def test_no_other_module_imports_private_dagster_names() -> None:
    allowed = ROOT / "variant_pipeline" / "assets" / "dagster_internals.py"
    files = [p for d in ("variant_pipeline", "scripts", "tests") for p in (ROOT / d).rglob("*.py") if p != allowed]
    offenders = [hit for p in files for hit in _private_dagster_imports(p)]
    assert offenders == [], f"import these through variant_pipeline/assets/dagster_internals.py: {offenders}"
