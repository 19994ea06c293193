"""Dagster's PostgreSQL storage with pooled connections (dagster.yaml ``storage: custom``).

dagster-postgres opens a new database connection for every query outside the web server
(``NullPool``). Creating a run from a sensor takes about twenty queries (the run row, its tags,
snapshot checks, one ``ASSET_MATERIALIZATION_PLANNED`` event per asset, the enqueue event), and
each partition check in a tick is one more: measured on this project's 2-core machine, a burst
of 300 new variants spent most of its time opening connections (server-side fork included),
creating runs at 1.5-4 per second. Keeping a few connections per process open makes those
queries cost what the query costs.

Every process that loads the instance (daemon, code server, web server, run workers) keeps at
most ``pool_size`` idle connections per storage (runs, events, schedules); bursts above that
open extra ones (``max_overflow``) that close when returned. The web server swaps in its own
pool as before (``optimize_for_webserver``).

The URL may be written the usual way (``postgresql://user@host/db``): it gets the psycopg2 driver,
as the pipeline's own URL does (SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, which
is not installed). A URL naming the pipeline's own database is refused: both schemas have a table
``jobs``.
"""

from typing import Any

from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

from variant_pipeline.data.engine import (
    make_engine,
    normalize_database_url,
    refuse_pipeline_database_for_dagster,
)

DEFAULT_POOL_SIZE = 2
DEFAULT_MAX_OVERFLOW = 8


class PooledPostgresStorage(DagsterPostgresStorage):
    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True,
                 inst_data: Any = None, token_provider: Any = None,
                 pool_size: int = DEFAULT_POOL_SIZE, max_overflow: int = DEFAULT_MAX_OVERFLOW) -> None:
        postgres_url = normalize_database_url(postgres_url)
        probe = make_engine(postgres_url, pool=False)
        try:
            with probe.connect() as conn:
                refuse_pipeline_database_for_dagster(conn)
        finally:
            probe.dispose()
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        # Each storage's engine is a private attribute (dagster-postgres 0.29): replaced, not reached
        # through any other private name; tests/integration/test_dagster_storage.py checks it is used.
        for storage in (self.run_storage, self.event_log_storage, self.schedule_storage):
            old = storage._engine
            # pool_pre_ping: a connection the server dropped (a restart) is replaced, not used.
            storage._engine = create_pg_engine(
                postgres_url, token_provider, isolation_level="AUTOCOMMIT", pool_size=pool_size,
                max_overflow=max_overflow, pool_recycle=3600, pool_pre_ping=True)
            old.dispose()
            _pre_ping_after_webserver_swap(storage)

    @classmethod
    def config_type(cls) -> Any:
        from dagster import Field, IntSource

        return {**DagsterPostgresStorage.config_type(), "pool_size": Field(IntSource, is_required=False, default_value=DEFAULT_POOL_SIZE),
                "max_overflow": Field(IntSource, is_required=False, default_value=DEFAULT_MAX_OVERFLOW)}

    @classmethod
    def from_config_value(cls, inst_data: Any,  # type: ignore[override]
                          config_value: dict[str, Any]) -> "PooledPostgresStorage":
        return cls(
            pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            token_provider=get_token_provider_from_config(config_value),
            pool_size=config_value.get("pool_size", DEFAULT_POOL_SIZE),
            max_overflow=config_value.get("max_overflow", DEFAULT_MAX_OVERFLOW),
        )


def _pre_ping_after_webserver_swap(storage: Any) -> None:
    """The web server replaces each storage's engine with one of Dagster's (one held connection, a
    statement timeout) that does not check a connection before use: after a database restart,
    every request that drew a connection the restart closed failed once with HTTP 500 (seen in
    the soak). Keep Dagster's engine and have its pool check connections first."""
    swap = storage.optimize_for_webserver

    def optimize_for_webserver(statement_timeout: int, pool_recycle: int, max_overflow: int) -> None:
        swap(statement_timeout=statement_timeout, pool_recycle=pool_recycle, max_overflow=max_overflow)
        storage._engine.pool._pre_ping = True  # SQLAlchemy's flag behind create_engine(pool_pre_ping=True)

    storage.optimize_for_webserver = optimize_for_webserver
