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
]

TIERS = ("unit", "integration", "e2e")
_TESTS = Path(__file__).parent


# Run together in one worker under pytest-xdist: the session's Ray head takes a fixed port.
_RAY_FILES = ("test_ray_serving.py",)
# The longest tests start first, so that two workers end about together (a soak of 3 minutes
# and its drain, then the fault tests: each several daemon minutes, mostly waiting).
_FIRST = ("e2e/test_soak.py", "e2e/test_faults.py", "e2e/test_ray_serving.py", "integration/test_ray_serving.py")


def _start_order(item: pytest.Item) -> int:
    where = item.path.relative_to(_TESTS).as_posix()
    if where in _FIRST:
        return _FIRST.index(where)
    return len(_FIRST) + (0 if where.startswith("e2e/") else 1)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        where = item.path.relative_to(_TESTS)
        tier = where.parts[0]
        if tier in TIERS:
            item.add_marker(tier)
        # ``scripts/test.sh`` runs two workers (--dist loadgroup): a daemon test is its own unit
        # of work, the others go by file (their module fixtures load models once), Ray by itself.
        if where.name in _RAY_FILES:
            item.add_marker(pytest.mark.xdist_group("ray"))
        elif tier != "e2e":
            item.add_marker(pytest.mark.xdist_group(where.as_posix()))
    items.sort(key=_start_order)
