"""One package speaks SQL: ``variant_pipeline.data``.

The import-linter contract in pyproject.toml keeps SQLAlchemy and the driver out of every other
package; this test keeps SQL text out of them too (a query string handed to a connection the data
layer lent, say). Docstrings and comments may talk about tables; code may not hold a statement.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "variant_pipeline"
SQL_OWNER = PACKAGE / "data"

# The start of a statement, as the package writes them (keywords in capitals).
STATEMENT = re.compile(
    r"\b(SELECT\s+[\w*(]|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX|FUNCTION)|"
    r"ALTER\s+TABLE|DROP\s+(TABLE|INDEX)|LISTEN\s+\w|NOTIFY\s+\w|pg_\w+\()"
)


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def sql_outside_the_owner(root: Path = PACKAGE) -> list[str]:
    """``path:line: text`` of every string constant outside ``data/`` that holds SQL."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if SQL_OWNER in path.parents:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                    and STATEMENT.search(node.value)):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {node.value.strip()[:80]}")
    return found


def test_no_sql_outside_the_data_layer() -> None:
    assert sql_outside_the_owner() == [], "SQL belongs in variant_pipeline/data (a named query there)"


def test_the_check_finds_a_statement_added_elsewhere(tmp_path: Path) -> None:
    package = tmp_path / "variant_pipeline"
    (package / "state").mkdir(parents=True)
    (package / "state" / "sneaky.py").write_text(
        '"""Reads SELECT-ed rows (a docstring may say so)."""\n'
        'QUERY = "UPDATE jobs SET status = \'done\' WHERE job_id = :j"\n'
        'def count(conn):\n    return conn.execute("SELECT count(*) FROM jobs")\n'
    )
    (package / "state" / "fine.py").write_text('MESSAGE = "select a stage to update"\n')
    found = sql_outside_the_owner(package)
    assert [line.split(": ", 1)[0] for line in found] == ["variant_pipeline/state/sneaky.py:2",
                                                          "variant_pipeline/state/sneaky.py:4"]
