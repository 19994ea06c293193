"""How Dagster runs this pipeline: its instance configuration, its workspace and the storage class
the instance configuration names, kept together.

- ``dagster.yaml``: the instance (PostgreSQL storage with pooled connections, queued runs, the
  ``gpu`` pool, run monitoring); ``variant-pipeline demo`` copies it into ``DAGSTER_HOME``.
- ``workspace.yaml``: the code location (``variant_pipeline.definitions``) that the daemon and
  the web server load.
- ``dagster_storage.py``: ``PooledPostgresStorage``, which every Dagster process imports by the
  module path written in ``dagster.yaml``.

Monitoring configuration (Prometheus scrape and alert rules, the Grafana dashboard) is not
Python and nothing imports it: it lives in ``deploy/`` at the repository root.
"""

from pathlib import Path

DAGSTER_YAML = Path(__file__).resolve().with_name("dagster.yaml")
WORKSPACE_YAML = Path(__file__).resolve().with_name("workspace.yaml")
