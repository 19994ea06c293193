"""A bare Dagster code location for ``scripts/bench_dagster_floor.py`` (not part of the pipeline).

A chain of ``FLOOR_ASSETS`` no-op assets on one dynamic partitions definition, one asset job, and
one sensor that, when the trigger file ``FLOOR_TRIGGER`` changes, asks for one run per new
partition in a single tick, adding the partitions in the same result: the shape of the outbox
sensor's burst, with none of this project's code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

N_ASSETS = int(os.environ.get("FLOOR_ASSETS", "9"))
TRIGGER = Path(os.environ.get("FLOOR_TRIGGER", "/nonexistent"))
BATCH_TAG = "floor/batch"

floor_partitions = dg.DynamicPartitionsDefinition(name="floor_keys")


def _floor_asset(index: int) -> dg.AssetsDefinition:
    @dg.asset(name=f"floor_{index}", partitions_def=floor_partitions,
              deps=[f"floor_{index - 1}"] if index else [])
    def _noop() -> None:
        return None

    return _noop


FLOOR_ASSETS = [_floor_asset(i) for i in range(N_ASSETS)]
floor_job = dg.define_asset_job("floor_job", selection=[a.key for a in FLOOR_ASSETS],
                                partitions_def=floor_partitions, executor_def=dg.in_process_executor)


@dg.sensor(job=floor_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def floor_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    text = TRIGGER.read_text() if TRIGGER.exists() else ""
    if not text or text == context.cursor:
        return dg.SkipReason("no new batch")
    spec = json.loads(text)  # {"batch": name, "runs": N, "selection": bool}
    keys = [f"{spec['batch']}-{i}" for i in range(spec["runs"])]
    selection = [a.key for a in FLOOR_ASSETS] if spec["selection"] else None
    context.update_cursor(text)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=k, partition_key=k, asset_selection=selection,
                                    tags={BATCH_TAG: spec["batch"]}) for k in keys],
        dynamic_partitions_requests=[floor_partitions.build_add_request(keys)],
    )


defs = dg.Definitions(assets=FLOOR_ASSETS, jobs=[floor_job], sensors=[floor_sensor])
