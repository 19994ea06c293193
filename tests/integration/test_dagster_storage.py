"""The Dagster instance as dagster.yaml configures it: PostgreSQL storage that keeps its connections."""

from __future__ import annotations

import shutil

import dagster as dg
import sqlalchemy as sa

from variant_pipeline.services import DAGSTER_YAML


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
