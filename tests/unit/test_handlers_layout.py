"""The handlers' layout, kept by a test: one module per stage, named after it. (They hold no SQL:
``test_sql_owner`` and the import-linter contracts keep SQL in the data layer.)"""

from __future__ import annotations

import importlib

from variant_pipeline import handlers
from variant_pipeline import stages as stage_graph


def test_every_stage_has_its_own_module_and_the_mapping_names_it() -> None:
    assert list(handlers.HANDLERS) == list(stage_graph.STAGE_NAMES)
    for name in stage_graph.STAGE_NAMES:
        module = importlib.import_module(f"variant_pipeline.handlers.{name}")
        assert handlers.HANDLERS[name] is module.run, name
