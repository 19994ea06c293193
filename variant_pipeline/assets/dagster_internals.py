"""Every name this project takes from Dagster's private modules (``dagster._...``), in one place.

A custom ``PartitionMapping`` (``assets/partitions.py``) needs three names Dagster does not export
publicly; the UI benchmark (``scripts/bench_ui.py``) writes a deployment's history in bulk into
Dagster's own tables and needs their definitions and one event payload class. Private modules
move between releases; importing them here, through ``_private``, turns
a moved name into one error that names the symbol and the installed Dagster version, and
``tests/unit/test_dagster_internals.py`` fails the same way before anything else runs into it.
Import these names from this module only (that test also checks no other module reaches into
``dagster._``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import dagster

# (module, name): every private symbol used, for the loader below and the upgrade test.
PRIVATE_SYMBOLS: tuple[tuple[str, str], ...] = (
    ("dagster._core.definitions.partitions.context", "partition_loading_context"),
    ("dagster._core.definitions.partitions.mapping.partition_mapping", "UpstreamPartitionsResult"),
    ("dagster._core.instance", "DynamicPartitionsStore"),
    # scripts/bench_ui.py only
    ("dagster._core.events", "AssetMaterializationPlannedData"),
    ("dagster._core.storage.event_log.schema", "SqlEventLogStorageTable"),
    ("dagster._core.storage.event_log.schema", "AssetEventTagsTable"),
    ("dagster._core.storage.event_log.schema", "AssetCheckExecutionsTable"),
    ("dagster._core.storage.runs.schema", "RunsTable"),
    ("dagster._core.storage.runs.schema", "RunTagsTable"),
)


class DagsterInternalsMoved(ImportError):
    """A private Dagster name this project relies on is gone from where it used to be."""


def _private(module: str, name: str) -> Any:
    where = f"{module}.{name}"
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise DagsterInternalsMoved(
            f"Dagster {dagster.__version__} has no {where} (a private name used by "
            f"variant_pipeline/assets/partitions.py): find its new home and update "
            f"variant_pipeline/assets/dagster_internals.py"
        ) from exc


if TYPE_CHECKING:  # type checkers see the real definitions
    from dagster._core.definitions.partitions.context import partition_loading_context
    from dagster._core.definitions.partitions.mapping.partition_mapping import UpstreamPartitionsResult
    from dagster._core.events import AssetMaterializationPlannedData
    from dagster._core.instance import DynamicPartitionsStore
    from dagster._core.storage.event_log.schema import (
        AssetCheckExecutionsTable,
        AssetEventTagsTable,
        SqlEventLogStorageTable,
    )
    from dagster._core.storage.runs.schema import RunsTable, RunTagsTable
else:
    _loaded = {name: _private(module, name) for module, name in PRIVATE_SYMBOLS}
    partition_loading_context = _loaded["partition_loading_context"]
    UpstreamPartitionsResult = _loaded["UpstreamPartitionsResult"]
    DynamicPartitionsStore = _loaded["DynamicPartitionsStore"]
    AssetMaterializationPlannedData = _loaded["AssetMaterializationPlannedData"]
    SqlEventLogStorageTable = _loaded["SqlEventLogStorageTable"]
    AssetEventTagsTable = _loaded["AssetEventTagsTable"]
    AssetCheckExecutionsTable = _loaded["AssetCheckExecutionsTable"]
    RunsTable = _loaded["RunsTable"]
    RunTagsTable = _loaded["RunTagsTable"]

__all__ = ["PRIVATE_SYMBOLS", "AssetCheckExecutionsTable", "AssetEventTagsTable", "AssetMaterializationPlannedData",
           "DagsterInternalsMoved", "DynamicPartitionsStore", "RunTagsTable", "RunsTable", "SqlEventLogStorageTable",
           "UpstreamPartitionsResult", "partition_loading_context"]
