"""What every stage handler shares: its context and its outcome.

A handler does the heavy work outside any transaction and returns a ``StageOutcome`` whose
``write`` runs inside the one short transaction that also marks the stage done, so a stage's
outputs and its ``(stage, done)`` commit together or not at all. Handlers return data; the assets
turn it into what the Dagster UI shows (``assets/rendering.py``). Reads are in ``rows.py``,
writes in ``outputs.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from variant_pipeline import stages as stage_graph
from variant_pipeline.config import Settings
from variant_pipeline.data.engine import Connection, Engine
from variant_pipeline.data.stage_inputs import VariantRow
from variant_pipeline.data.stage_outputs import upsert_evaluation
from variant_pipeline.data.storage import AssetStore


class Models(Protocol):
    """Lazy handles to the shared models, by model family name (``models.registry``); each
    loads on first use, once per process. Handlers name a family by ``stage_model``."""

    def get(self, family: str) -> Any: ...
    def describe(self, family: str) -> str: ...


def stage_model(stage: str) -> str:
    """The model family ``stage`` uses, as the stage graph declares it (``Stage.model``)."""
    family = stage_graph.stage(stage).model
    if family is None:
        raise ValueError(f"stage {stage!r} uses no model")
    return family


@dataclass
class HandlerContext:
    engine: Engine
    store: AssetStore
    settings: Settings
    models: Models
    origin: str  # recorded on every outbox event this stage's writes cause
    partition_key: str  # job_variants_id or job_id
    log: Callable[[str], None] = print
    run_id: str | None = None  # the Dagster run; None outside Dagster (the origin names the caller)
    # True for automatic retries: attempts count on from the last one instead of starting at 1.
    continues_attempts: bool = False
    # True for runs the pipeline launched (not a person's): a stage no longer asked for is skipped.
    launched: bool = False


@dataclass
class Thumbnail:
    """An image to show with the stage's result (rendered for the UI by the asset)."""

    label: str
    image: Image.Image
    path: str | None = None  # the full-size file (a path or an s3:// URI), for a link


@dataclass
class StageOutcome:
    write: Callable[[Connection], None]
    metadata: dict[str, Any] = field(default_factory=dict)
    thumbnails: list[Thumbnail] = field(default_factory=list)
    model: str | None = None  # what model (path or id) did the work


def elapsed_ms(start: float) -> int:
    """Milliseconds since ``start`` (a ``time.perf_counter()`` reading), for ``latency_ms`` columns."""
    return int((time.perf_counter() - start) * 1000)


def evaluation_outcome(variant: VariantRow, overlay_id: str, kind: str, metrics: dict[str, Any],
                       latency_ms: int, summary: dict[str, Any], model: str | None = None) -> StageOutcome:
    """The outcome of an evaluation stage: one ``evaluations`` row of ``kind`` for the variant."""
    record = {**metrics, "latency_ms": latency_ms}

    def write(conn: Connection) -> None:
        upsert_evaluation(conn, variant, overlay_id, kind, record)

    return StageOutcome(write=write, metadata={**summary, "latency_ms": latency_ms}, model=model)
