"""Stage assets (one per stage in the stage graph) and their partitions."""
