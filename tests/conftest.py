"""Shared fixtures live in tests/fixtures/; each area owns its own module there.

The tests are laid out by tier, and each test is marked with its tier's name from its folder:
``tests/unit`` (no database, no daemon), ``tests/integration`` (a real PostgreSQL) and
``tests/e2e`` (the real Dagster daemon). ``scripts/test.sh -m unit`` runs the fast tier alone.
"""

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.models",
    "tests.fixtures.pipeline",
    "tests.fixtures.ray",
    "tests.fixtures.s3",
]

TIERS = ("unit", "integration", "e2e")
_TESTS = Path(__file__).parent


# The longest test files start first (``scripts/test.sh`` runs two pytest-xdist workers, a file
# at a time each), so that the two end about together: a soak of 3 minutes and its drain, then
# the fault tests, each several daemon minutes, mostly waiting.
_FIRST = ("e2e/test_soak.py", "e2e/test_faults.py", "e2e/test_ray_serving.py")


def _start_order(item: pytest.Item) -> int:
    where = item.path.relative_to(_TESTS).as_posix()
    if where in _FIRST:
        return _FIRST.index(where)
    return len(_FIRST) + (0 if where.startswith("e2e/") else 1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.relative_to(_TESTS).parts[0]
        if tier in TIERS:
            item.add_marker(tier)
    items.sort(key=_start_order)
