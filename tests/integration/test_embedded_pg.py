"""The embedded PostgreSQL takes the connections a busy deployment opens.

Found by the 60-minute soak: with a second daemon and several run workers beside the daemon, its
code server and the web server, PostgreSQL's default of 100 connections ran out ("sorry, too many
clients already") and every process that could not connect retried, slowing recovery.
"""

from __future__ import annotations

import sqlalchemy as sa

from variant_pipeline.data.embedded_pg import MAX_CONNECTIONS


def test_the_embedded_server_takes_well_over_a_hundred_connections(pg_admin_url) -> None:
    engine = sa.create_engine(pg_admin_url, poolclass=sa.pool.NullPool)
    held = []
    try:
        for _ in range(150):  # what a daemon, a second daemon, a web server and run workers may hold
            held.append(engine.connect())
        assert held[-1].execute(sa.text("SHOW max_connections")).scalar_one() == str(MAX_CONNECTIONS)
    finally:
        for conn in held:
            conn.close()
        engine.dispose()
