-- 004: retention (variant-pipeline prune, variant_pipeline/state/retention.py).
--
-- pruned_at: when prune last removed a finished job's Dagster partitions and asset files while
-- keeping its rows. A job reopened later (a retry) and finished again is pruned again
-- (pruned_at < finished_at); otherwise a re-run of prune passes it over.
ALTER TABLE jobs
    ADD COLUMN pruned_at timestamptz;
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- The orphan-file scan asks, for each file under the asset root, whether a row names it.
CREATE INDEX image_assets_path_idx ON image_assets (path);

-- Trimming the outbox deletes the oldest events first.
CREATE INDEX pipeline_events_created_idx ON pipeline_events (created_at);
