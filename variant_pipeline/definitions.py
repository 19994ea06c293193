"""The Dagster code location: stage assets, their jobs, sensors and resources.

Dagster's daemon, web server and every run worker load this module: it is their entry point, so
it sets the model libraries' offline switches and Dagster's telemetry switch for the process.
"""

from __future__ import annotations

import warnings

import dagster as dg

from variant_pipeline.assets.jobs import PIPELINE_JOBS
from variant_pipeline.assets.stage_assets import STAGE_ASSETS
from variant_pipeline.config import apply_offline_defaults
from variant_pipeline.resources import default_resources
from variant_pipeline.sensors.continuation import build_continuation_sensor
from variant_pipeline.sensors.notices import build_notice_sensor
from variant_pipeline.sensors.outbox import build_outbox_sensor
from variant_pipeline.sensors.recovery import build_recovery_sensor
from variant_pipeline.sensors.retention import retention_schedules

# None of the imports above imports a model library (the loaders do, at run time, and set the
# switches themselves too); the processes this module starts inherit them.
apply_offline_defaults()

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
    # once per run and no Dagster step pays a process spawn (measured: ~2 s each on this machine).
    executor=dg.in_process_executor,
)
