"""The per-variant quality checks as Dagster asset checks, emitted with each evaluation asset.

Each evaluation stage (vlm_judge, ocr_eval, readability_eval, iou_eval) declares its checks and
returns their results with its materialization, so they show in the run and in the asset's
Checks tab for that variant partition. Severity is WARN: a variant that fails a check is still
delivered, and says so. What a check means and how it is decided lives in ``quality.py``.

Partitioned check specs (``AssetCheckSpec(partitions_def=...)``) are a preview feature in
Dagster 1.13: this module is the only place that uses them. Without ``partitions_def`` a result
is not tied to its partition and the Checks tab would show only the latest variant's outcome.
Verified in 1.13.27 with dynamic partitions: each evaluation is stored with its partition key.
"""

from __future__ import annotations

import warnings

import dagster as dg

from variant_pipeline.assets.partitions import variant_partitions
from variant_pipeline.config import Settings
from variant_pipeline.data.engine import Engine
from variant_pipeline.data.results import variant_checks
from variant_pipeline.quality import CHECKS, CheckOutcome, checks_of


def _spec(check_name: str, stage: str, description: str) -> dg.AssetCheckSpec:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")
        return dg.AssetCheckSpec(check_name, asset=stage, description=description,
                                 partitions_def=variant_partitions)


CHECK_SPECS: dict[str, list[dg.AssetCheckSpec]] = {}
for _check in CHECKS:
    CHECK_SPECS.setdefault(_check.stage, []).append(_spec(_check.name, _check.stage, _check.description))


def check_result(outcome: CheckOutcome, stage_name: str) -> dg.AssetCheckResult:
    metadata: dict[str, dg.RawMetadataValue] = {"outcome": outcome.outcome, "summary": outcome.summary}
    if outcome.value is not None:
        metadata["value"] = outcome.value
    if outcome.threshold is not None:
        metadata["threshold"] = outcome.threshold
    # A check that could not be evaluated is not a pass: it shows as a warning that says why.
    return dg.AssetCheckResult(asset_key=stage_name, check_name=outcome.name, passed=outcome.passed,
                               severity=dg.AssetCheckSeverity.WARN, description=outcome.summary,
                               metadata=metadata)


def stage_check_results(engine: Engine, stage_name: str, partition_key: str,
                        settings: Settings) -> list[dg.AssetCheckResult]:
    """The results of ``stage_name``'s checks for one variant, from what the stage just stored."""
    if not checks_of(stage_name):
        return []
    return [check_result(o, stage_name) for o in variant_checks(engine, partition_key, settings, (stage_name,))]
