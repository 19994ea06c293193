"""The data layer: PostgreSQL and asset files, with no orchestrator and no models.

It is the one package that speaks SQL: every statement is a named function here, and nothing
else imports SQLAlchemy (an import-linter contract) or holds SQL text (``tests/unit/test_sql_owner.py``).
Callers get ``Engine``, ``Connection`` and the errors they tell apart from ``engine``.

- ``engine``: where the database is (``DATABASE_URL`` or the embedded server), engines, and
  ``transaction(engine, origin=...)`` for state writes.
- ``embedded_pg``: the embedded PostgreSQL server used when ``DATABASE_URL`` is not set.
- ``migrations``: the numbered files in sql/, applied in order.
- ``jobs``: tenants, job submission, job status, a job's variants.
- ``partition_state``: the ``(current_step, status)`` rows and ``stage_attempts``; every state
  write is one of its named transitions.
- ``locks``: the partition lock and the run lease (session advisory locks).
- ``stage_inputs``, ``stage_outputs``: every row a stage reads, every row it writes.
- ``outbox``: reading ``pipeline_events`` in commit order, and the NOTIFY wake-up hint.
- ``retention``: prune's queries; ``results``: the results contract; ``metrics``, ``notices``:
  what the metrics endpoint reads and the failure notices due.
- ``audit``: reads that check the tables from outside (the soak's checkers, the benchmarks);
  ``upstream``: another system's plain inserts (the soak's producers, a benchmark's fill).
- ``storage``: asset files under a directory or an S3 bucket.
"""
