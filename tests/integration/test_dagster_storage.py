"""The Dagster instance as dagster.yaml configures it: PostgreSQL storage that keeps its connections."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest
import sqlalchemy as sa

from variant_pipeline.deployment import DAGSTER_YAML


def test_the_configured_instance_reuses_pooled_connections(pipeline_env, tmp_path, monkeypatch) -> None:
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    monkeypatch.setenv("VP_DAGSTER_STORAGE_URL", pipeline_env.dagster_url)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storages = (instance.run_storage, instance.event_log_storage, instance.schedule_storage)
        pools = [s._engine.pool for s in storages]
        assert all(isinstance(p, sa.pool.QueuePool) for p in pools)
        instance.add_dynamic_partitions("job_variants", ["a", "b"])
        backends = set()
        for key in ("a", "b", "c") * 10:  # what a tick's partition checks do, one query each
            instance.has_dynamic_partition("job_variants", key)
            with instance.event_log_storage.index_connection() as conn:
                backends.add(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        # Stock dagster-postgres opens a new connection (a new server backend) per query.
        assert len(backends) == 1
        assert sorted(instance.get_dynamic_partitions("job_variants")) == ["a", "b"]


def test_a_queued_run_outlives_a_minute_without_its_code_server(pipeline_env, tmp_path, monkeypatch) -> None:
    """A launch that cannot reach the code server puts the run back in the queue (Dagster's run
    queue setting); with the default of 0 each such run failed, and a PostgreSQL restart or a
    killed code server failed every queued run at once (the 60-minute soak: about 100 runs)."""
    monkeypatch.setenv("VP_DAGSTER_STORAGE_URL", pipeline_env.dagster_url)
    with dg.DagsterInstance.from_config(_instance_home(tmp_path)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_user_code_failure_retries * queue.user_code_failure_retry_delay >= 60
    assert queue.user_code_failure_retry_delay <= 5  # and a run goes again within seconds
    assert queue.max_concurrent_runs == 4


def _instance_home(tmp_path) -> str:
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    return str(home)


def test_a_plain_postgresql_url_for_dagster_gets_the_installed_driver(pipeline_env, tmp_path, monkeypatch) -> None:
    # The usual way to write it; SQLAlchemy 2.1 would read it as psycopg 3, which is not installed.
    plain = "postgresql://" + pipeline_env.dagster_url.split("://", 1)[1]
    monkeypatch.setenv("VP_DAGSTER_STORAGE_URL", plain)
    with dg.DagsterInstance.from_config(_instance_home(tmp_path)) as instance:
        instance.add_dynamic_partitions("job_variants", ["p"])
        assert instance.get_dynamic_partitions("job_variants") == ["p"]
        assert instance.run_storage._engine.dialect.driver == "psycopg2"


def test_dagster_storage_in_the_pipelines_own_database_is_refused_with_the_reason(pipeline_env, tmp_path,
                                                                                  monkeypatch) -> None:
    monkeypatch.setenv("VP_DAGSTER_STORAGE_URL", pipeline_env.app_url)
    with pytest.raises(Exception) as caught:
        dg.DagsterInstance.from_config(_instance_home(tmp_path))
    chain, exc = [], caught.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert any("pipeline's own database" in text for text in chain), chain
    engine = sa.create_engine(pipeline_env.app_url)
    with engine.connect() as conn:  # nothing of Dagster's was created there
        assert conn.execute(sa.text("SELECT to_regclass('event_logs')")).scalar_one() is None
    engine.dispose()


def test_the_cli_refuses_one_database_for_both_in_one_line(pipeline_env, monkeypatch, capsys) -> None:
    from variant_pipeline.cli import main

    monkeypatch.setenv("DAGSTER_DATABASE_URL", pipeline_env.app_url)
    assert main(["db", "url", "--dagster"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: DAGSTER_DATABASE_URL names the pipeline's own database") and err.count("\n") == 1


def test_the_pipeline_schema_is_not_written_into_dagsters_database(pipeline_env, tmp_path, monkeypatch,
                                                                   capsys) -> None:
    from variant_pipeline.cli import main

    monkeypatch.setenv("VP_DAGSTER_STORAGE_URL", pipeline_env.dagster_url)
    dg.DagsterInstance.from_config(_instance_home(tmp_path)).dispose()  # Dagster's schema is there now
    monkeypatch.setenv("DATABASE_URL", pipeline_env.dagster_url)
    monkeypatch.delenv("DAGSTER_DATABASE_URL")
    assert main(["db", "upgrade"]) == 2
    err = capsys.readouterr().err
    assert "holds Dagster's storage" in err and err.count("\n") == 1
    engine = sa.create_engine(pipeline_env.dagster_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('schema_migrations')")).scalar_one() is None
    engine.dispose()


def test_the_web_servers_connections_survive_a_database_that_dropped_them(pipeline_env, tmp_path,
                                                                          monkeypatch) -> None:
    # What a database restart does to the web server's held connections: the server ends them.
    monkeypatch.setenv("VP_DAGSTER_STORAGE_URL", pipeline_env.dagster_url)
    with dg.DagsterInstance.from_config(_instance_home(tmp_path)) as instance:
        instance.optimize_for_webserver(statement_timeout=5000, pool_recycle=3600, max_overflow=20)
        instance.get_runs_count()  # the pools now hold a connection each
        instance.get_dynamic_partitions("job_variants")
        admin = sa.create_engine(pipeline_env.dagster_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            ended = conn.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
        admin.dispose()
        assert ended >= 1
        assert instance.get_runs_count() == 0  # answered, not "server closed the connection unexpectedly"
        assert instance.get_dynamic_partitions("job_variants") == []
