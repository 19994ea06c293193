-- 008: stage attempts by run.
--
-- The recovery sensor asks, every tick, which runs Dagster calls STARTED have an attempt that
-- stopped inside its stage (still running, or lost or superseded): such a run had its lease and was not
-- finishing normally, so a free lease means its worker is gone, and its partition can be
-- restarted at once instead of after the lease grace.
CREATE INDEX stage_attempts_run_idx ON stage_attempts (run_id);
