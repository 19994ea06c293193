"""The handlers' layout, kept by a test: one module per stage, named after it, and SQL only in
the shared readers and writers."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from variant_pipeline import handlers
from variant_pipeline import stages as stage_graph

HANDLERS_DIR = Path(handlers.__file__).parent
# The only handler modules that speak SQL: reads, writes, and the brief's job lock.
SQL_MODULES = {"rows.py", "outputs.py", "brief.py", "__init__.py"}


def test_every_stage_has_its_own_module_and_the_mapping_names_it() -> None:
    assert list(handlers.HANDLERS) == list(stage_graph.STAGE_NAMES)
    for name in stage_graph.STAGE_NAMES:
        module = importlib.import_module(f"variant_pipeline.handlers.{name}")
        assert handlers.HANDLERS[name] is module.run, name


def test_stage_modules_hold_no_sql() -> None:
    offenders = []
    for path in sorted(HANDLERS_DIR.glob("*.py")):
        if path.name in SQL_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                offenders += [f"{path.name}: imports {n}" for n in names if n.split(".")[0] == "sqlalchemy"
                              and n != "sqlalchemy.engine"]
            if isinstance(node, ast.Attribute) and node.attr == "text" and getattr(node.value, "id", "") == "sa":
                offenders.append(f"{path.name}:{node.lineno}: sa.text")
    assert offenders == [], "stage modules read through handlers/rows.py and write through handlers/outputs.py"
