"""One package speaks SQL: ``variant_pipeline.data``.

The import-linter contract in pyproject.toml keeps SQLAlchemy and the driver out of every other
package; this test keeps SQL text out of them too (a query string handed to a connection the data
layer lent, say), and out of the scripts (the soak, the benchmarks), which the contract does not
see: they import neither SQLAlchemy nor the driver, and read and write through named queries of the
data layer. Docstrings and comments may talk about tables; code may not hold a statement.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SQL_OWNER = Path("variant_pipeline") / "data"
DRIVERS = ("sqlalchemy", "psycopg2")

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


def _checked_files(repo: Path) -> list[Path]:
    """The package's modules outside ``data/``, and the scripts."""
    package = [p for p in (repo / "variant_pipeline").rglob("*.py")
               if (repo / SQL_OWNER) not in p.parents]
    return sorted(package + list((repo / "scripts").glob("*.py")))


def sql_outside_the_owner(repo: Path = REPO) -> list[str]:
    """``path:line: text`` of every string constant outside ``data/`` that holds SQL."""
    found = []
    for path in _checked_files(repo):
        tree = ast.parse(path.read_text(), filename=str(path))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                    and STATEMENT.search(node.value)):
                found.append(f"{path.relative_to(repo)}:{node.lineno}: {node.value.strip()[:80]}")
    return found


def scripts_importing_a_driver(repo: Path = REPO) -> list[str]:
    """``path:line: module`` of every import of SQLAlchemy or the driver in scripts/ (the
    import-linter contract covers the package only)."""
    found = []
    for path in sorted((repo / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(repo)}:{node.lineno}: {name}" for name in names
                      if name.split(".")[0] in DRIVERS]
    return found


def test_no_sql_outside_the_data_layer() -> None:
    assert sql_outside_the_owner() == [], "SQL belongs in variant_pipeline/data (a named query there)"


def test_scripts_import_no_database_driver() -> None:
    assert scripts_importing_a_driver() == [], "scripts reach the database through variant_pipeline.data"


def test_the_check_finds_a_statement_added_elsewhere(tmp_path: Path) -> None:
    package = tmp_path / "variant_pipeline"
    for folder in (package / "state", package / "data", tmp_path / "scripts"):
        folder.mkdir(parents=True)
    (package / "state" / "sneaky.py").write_text(
        '"""Reads SELECT-ed rows (a docstring may say so)."""\n'
        'QUERY = "UPDATE jobs SET status = \'done\' WHERE job_id = :j"\n'
        'def count(conn):\n    return conn.execute("SELECT count(*) FROM jobs")\n'
    )
    (package / "state" / "fine.py").write_text('MESSAGE = "select a stage to update"\n')
    (package / "data" / "owner.py").write_text('QUERY = "SELECT count(*) FROM jobs"\n')  # its home
    (tmp_path / "scripts" / "bench_sneaky.py").write_text(
        '"""A benchmark."""\n'
        'import sqlalchemy as sa\n'
        'from sqlalchemy.engine import Connection\n'
        'def fill(conn):\n    conn.execute(sa.text("INSERT INTO jobs (tenant_id) VALUES (:t)"))\n'
    )
    (tmp_path / "scripts" / "fine.py").write_text('from variant_pipeline.data import audit\n')
    found = sql_outside_the_owner(tmp_path)
    assert [line.split(": ", 1)[0] for line in found] == ["scripts/bench_sneaky.py:5",
                                                          "variant_pipeline/state/sneaky.py:2",
                                                          "variant_pipeline/state/sneaky.py:4"]
    assert scripts_importing_a_driver(tmp_path) == ["scripts/bench_sneaky.py:2: sqlalchemy",
                                                    "scripts/bench_sneaky.py:3: sqlalchemy.engine"]
