"""The Dagster code location: stage assets, their jobs, sensors and resources."""

from __future__ import annotations

import warnings

import dagster as dg

from variant_pipeline.assets.jobs import PIPELINE_JOBS
from variant_pipeline.assets.stage_assets import STAGE_ASSETS
from variant_pipeline.resources import default_resources
from variant_pipeline.sensors.continuation import build_continuation_sensor
from variant_pipeline.sensors.notices import build_notice_sensor
from variant_pipeline.sensors.outbox import build_outbox_sensor
from variant_pipeline.sensors.recovery import build_recovery_sensor
from variant_pipeline.sensors.retention import retention_schedules

# JobVariantsPartitionMapping is not one of Dagster's built-in mappings (none maps a job to its
# own variants across two dynamic partition sets); Dagster warns about that on every load.
warnings.filterwarnings("ignore", message="Non-built-in PartitionMappings")

defs = dg.Definitions(
    assets=STAGE_ASSETS,
    jobs=PIPELINE_JOBS,
    sensors=[build_outbox_sensor(), build_continuation_sensor(), build_recovery_sensor(), build_notice_sensor()],
    schedules=retention_schedules(),  # prune: the partition budget (on by default) and VP_PRUNE_OLDER_THAN
    resources=default_resources(),
    # Every run, the implicit asset job's included, runs its steps in one process: models load
    # once per run and no step pays a process spawn (measured: ~2 s each on this machine).
    executor=dg.in_process_executor,
)
