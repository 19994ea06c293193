"""Unit tests run without a database: asking for one is a test in the wrong tier."""

import pytest


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    pytest.fail("a unit test asked for PostgreSQL: move it to tests/integration")
