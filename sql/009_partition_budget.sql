-- 009: the partition budget (VP_PARTITION_BUDGET; variant_pipeline/state/retention.py).
--
-- partitions_removed_at: when prune last removed a finished job's Dagster partitions, either by
-- the age rule (which removes its files too and sets pruned_at) or to bring the live variant
-- partitions within the budget (rows and files stay; the age rule still removes the files
-- later). A job reopened and finished again (partitions_removed_at < finished_at) has its
-- partitions again and counts against the budget once more.
ALTER TABLE jobs
    ADD COLUMN partitions_removed_at timestamptz;
UPDATE jobs SET partitions_removed_at = pruned_at WHERE pruned_at IS NOT NULL;
