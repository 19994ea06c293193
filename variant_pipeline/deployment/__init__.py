"""How Dagster runs this pipeline: the storage class its instance configuration names, and where
that configuration and the workspace are.

- ``dagster.yaml`` (at the repository's top level): the instance (PostgreSQL storage with pooled
  connections, queued runs, the ``gpu`` pool, run monitoring); ``variant-pipeline demo`` copies it
  into ``DAGSTER_HOME``.
- ``workspace.yaml`` (at the top level too): the code location (``variant_pipeline.definitions``)
  that the daemon and the web server load.
- ``dagster_storage.py``: ``PooledPostgresStorage``, which every Dagster process imports by the
  module path written in ``dagster.yaml``.

Monitoring configuration (Prometheus scrape and alert rules, the Grafana dashboard) is not
Python and nothing imports it: it lives in ``deploy/`` at the repository root.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAGSTER_YAML = PROJECT_ROOT / "dagster.yaml"
WORKSPACE_YAML = PROJECT_ROOT / "workspace.yaml"
