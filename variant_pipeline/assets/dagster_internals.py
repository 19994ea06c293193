"""Every name this project takes from Dagster's private modules (``dagster._...``), in one place.

A custom ``PartitionMapping`` (``assets/partitions.py``) needs three names Dagster does not export
publicly. Private modules move between releases; importing them here, through ``_private``, turns
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
    from dagster._core.instance import DynamicPartitionsStore
else:
    _loaded = {name: _private(module, name) for module, name in PRIVATE_SYMBOLS}
    partition_loading_context = _loaded["partition_loading_context"]
    UpstreamPartitionsResult = _loaded["UpstreamPartitionsResult"]
    DynamicPartitionsStore = _loaded["DynamicPartitionsStore"]

__all__ = ["PRIVATE_SYMBOLS", "DagsterInternalsMoved", "DynamicPartitionsStore", "UpstreamPartitionsResult",
           "partition_loading_context"]
