"""What the Dagster UI shows for a stage's result: its metadata, with thumbnails as inline markdown.

Handlers return plain data (``StageOutcome``: values, ``Thumbnail`` images, the model used); this
module is the only place that turns it into Dagster metadata.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from PIL import Image

from variant_pipeline.gallery import data_uri
from variant_pipeline.handlers.base import StageOutcome
from variant_pipeline.resources.models import model_load_counts


def thumbnail_markdown(image: Image.Image, label: str, max_px: int = 192) -> str:
    """A small inline image for the Dagster UI (metadata lives in the event log: keep it small)."""
    return f"![{label}]({data_uri(image, max_px)})"


def _metadata_value(value: Any) -> Any:
    if value is None:
        return dg.MetadataValue.null()
    if isinstance(value, bool | int | float | str):
        return value
    return dg.MetadataValue.json(value)


def result_metadata(outcome: StageOutcome, latency_s: float, serving: dict[str, Any] | None = None) -> dict[str, Any]:
    """``serving``: the backend and served-call facts of the stage (``ResourceModels.serving_metadata``)."""
    metadata: dict[str, Any] = {k: _metadata_value(v) for k, v in outcome.metadata.items()}
    for thumb in outcome.thumbnails:
        metadata[f"image: {thumb.label}"] = dg.MetadataValue.md(thumbnail_markdown(thumb.image, thumb.label))
        if thumb.path:
            metadata[f"file: {thumb.label}"] = dg.MetadataValue.path(thumb.path)
    if outcome.model:
        metadata["model"] = outcome.model
    # Loads of each model in this run process so far: 1 means the model was loaded once and shared
    # (none with the ray backend: the replicas' loads are in model_replica_loads).
    metadata["model_loads_in_run"] = dg.MetadataValue.json(model_load_counts())
    metadata.update({k: _metadata_value(v) for k, v in (serving or {}).items()})
    metadata["stage_seconds"] = round(latency_s, 3)
    return metadata
