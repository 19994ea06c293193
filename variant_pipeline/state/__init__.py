"""The state machine: the ``(current_step, status)`` of every variant and job, and who moves it.

A row (``jobs_variants`` for a variant, ``jobs`` for a job's own stages) is always at one stage
of its level with one status::

    (s, queued) ──claim──> (s, running) ──commit──> (s, done) ──claim──> (s+1, running) ...
         ^                      │    │
         └── + retry_at <───────┘    └──> (s, failed)    (last attempt, bad input, cancelled)
             (raised, timed out, worker lost; attempts remain)

- **queued → running** (``claims.claim``, under the partition lock ``data.locks.PartitionLock``): a
  new ``stage_attempts`` row; an automatic retry counts on, any other run starts at attempt 1
  (``claims.next_attempt``).
- **running → done** (``attempts.execute_stage``): the outputs and ``done`` in one transaction,
  only if the row still names the attempt (the fence, ``claims.is_current``).
- **running → queued + retry_at** (``claims.mark_failed``): a failure, a timeout or a lost worker
  while attempts remain (``retry.after_failure``: backoff doubling); **→ failed** after the last
  one, at once for bad input (``attempts.StageInputError``) or a run cancelled by a person.
- **running, worker gone → lost** (``recovery.recover_lost_claims``): the lock is free, so the
  attempt is recorded ``lost`` and counts as a failure.
- **stalled → restarted** (``recovery.find_restarts``): a row waiting for its next stage with
  no run in flight for ``VP_STALL_AFTER_S``, restarted from ``transitions.restart_stage``.
- **failed/done → queued** (``recovery.request_retry``, the CLI's ``retry``): a new round.
- **job rollup** (the trigger in sql/002_events.sql): when every expected variant is terminal,
  the job moves to ``(last variant stage, done)``, or ``failed`` if none finished; that change
  starts its job-level stages (``transitions.start_stage_for``).

Where each rule is enforced: the level of a stage, timings and the rollup in the database
triggers (sql/002_events.sql), the attempt columns and ``stage_attempts`` in sql/003_attempts.sql;
one worker per partition by ``data.locks``; the fence and the attempt records by ``claims``; what
runs next by ``transitions`` (used by the outbox sensor and by ``recovery``). This package decides;
it speaks no SQL: each decision is said to the database by a named transition of
``data.partition_state`` (``claim``, ``complete``, ``schedule_retry``, ``fail``, ``requeue``,
``cancel``, ``reopen_job``) or ``data.retention`` (``prune_job``). The decisions themselves
(``claims.next_attempt`` and ``is_current``, ``retry.after_failure``, ``recovery.plan_restarts``,
``transitions``, prune's ``retention.orphans``) are pure functions of what was read and the time
passed in, tested without a database (tests/unit/test_retry_decisions.py, test_recovery_plan.py,
test_retention_rules.py). Every write records an
origin (``origins``), which tells the outbox sensor the pipeline's own progress from requests.
docs/state-machine.md draws the same in more detail. This package runs no stage work and knows
no orchestrator: the stage's handler is passed in.
"""
