"""A bare Dagster code location for ``scripts/bench_ui.py``: the pipeline's asset graph, no code of ours.

The graph comes from the JSON file named by ``FLOOR_GRAPH`` (written by bench_ui.py from the
pipeline's definitions): every asset with its name, group, dynamic partitions definition, upstream
asset and asset checks. Each asset is a no-op. The one difference from the pipeline: the
job-level asset's dependency on the last variant-level asset has no partition mapping of ours,
so Dagster uses its default for two different partitions definitions (identity), the cheapest it
has. Served on the same Dagster instance as the pipeline, it shows the same partitions and the
same history: the floor that Dagster's own UI sets for these pages.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import dagster as dg

GRAPH = json.loads(Path(os.environ["FLOOR_GRAPH"]).read_text())
PARTITIONS = {name: dg.DynamicPartitionsDefinition(name=name) for name in {a["partitions"] for a in GRAPH}}


def _floor_asset(node: dict) -> dg.AssetsDefinition:
    partitions = PARTITIONS[node["partitions"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # partitioned check specs are a preview feature
        checks = [dg.AssetCheckSpec(name, asset=node["name"], partitions_def=partitions) for name in node["checks"]]
    spec = dg.AssetSpec(node["name"], deps=node["deps"], group_name=node["group"], partitions_def=partitions)

    @dg.multi_asset(name=node["name"], specs=[spec], check_specs=checks or None, partitions_def=partitions)
    def _noop():  # no return annotation: a multi_asset annotated "-> None" has no output to bind
        return None

    return _noop


defs = dg.Definitions(assets=[_floor_asset(node) for node in GRAPH])
