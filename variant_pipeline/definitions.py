"""The Dagster code location: stage assets, their jobs, sensors and resources."""

from __future__ import annotations

import warnings

import dagster as dg

from variant_pipeline.assets.stage_assets import STAGE_ASSETS, job_pipeline_job, variant_pipeline_job
from variant_pipeline.resources import default_resources
from variant_pipeline.sensors.continuation import build_continuation_sensor
from variant_pipeline.sensors.outbox import build_outbox_sensor
from variant_pipeline.sensors.recovery import build_recovery_sensor

# JobVariantsPartitionMapping is not one of Dagster's built-in mappings (none maps a job to its
# own variants across two dynamic partition sets); Dagster warns about that on every load.
warnings.filterwarnings("ignore", message="Non-built-in PartitionMappings")

defs = dg.Definitions(
    assets=STAGE_ASSETS,
    jobs=[variant_pipeline_job, job_pipeline_job],
    sensors=[
        build_outbox_sensor(variant_pipeline_job, job_pipeline_job),
        build_continuation_sensor(variant_pipeline_job, job_pipeline_job),
        build_recovery_sensor(variant_pipeline_job, job_pipeline_job),
    ],
    resources=default_resources(),
    # Every run, the implicit asset job's included, runs its steps in one process: models load
    # once per run and no step pays a process spawn (measured: ~2 s each on this machine).
    executor=dg.in_process_executor,
)
