-- 005: a run the pipeline launched for a state its partition has since left does nothing.
--
-- Such a run (a duplicate from a replayed sensor tick or a second daemon, a recovery restart that
-- raced a slow run) records what it found as a 'skipped' attempt: which run, which stage, and the
-- state that made it stale, so `status --attempts` shows it beside the attempts that did the work.
-- A skipped row is not an attempt at the stage: it never runs, never writes, and is never retried.

ALTER TABLE stage_attempts DROP CONSTRAINT stage_attempts_outcome_check;
ALTER TABLE stage_attempts ADD CONSTRAINT stage_attempts_outcome_check
    CHECK (outcome IN ('running', 'done', 'failed', 'lost', 'superseded', 'skipped'));
