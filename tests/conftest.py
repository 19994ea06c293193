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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.relative_to(_TESTS).parts[0]
        if tier in TIERS:
            item.add_marker(tier)
