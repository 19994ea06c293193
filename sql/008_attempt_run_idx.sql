-- 008: stage attempts by run.
--
-- The recovery sensor asks, every tick, which of the young runs Dagster calls STARTED have
-- claimed a stage: such a run had taken its lease, so a free lease means its worker is gone and
-- its partition can be restarted at once, without waiting out the lease grace.
CREATE INDEX stage_attempts_run_idx ON stage_attempts (run_id);
