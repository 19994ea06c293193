"""The data layer: PostgreSQL and asset files, with no orchestrator and no models.

- ``engine``: where the database is (``DATABASE_URL`` or the embedded server), engines, and
  ``transaction(engine, origin=...)`` for state writes.
- ``embedded_pg``: the embedded PostgreSQL server used when ``DATABASE_URL`` is not set.
- ``migrations``: the numbered files in sql/, applied in order.
- ``jobs``: tenants, job submission and job status.
- ``outbox``: reading ``pipeline_events`` in commit order, and the NOTIFY wake-up hint.
- ``storage``: image files under ``$VARIANT_PIPELINE_HOME/assets``.
"""
