"""Dagster resources: database, asset storage and one model handle per registered model family."""

from variant_pipeline.resources.database import AssetStorageResource, DatabaseResource
from variant_pipeline.resources.models import ModelResource, model_resources


def default_resources() -> dict[str, object]:
    """Every resource the assets need, configured from the environment (one place: config.py)."""
    return {
        "database": DatabaseResource(),
        "asset_storage": AssetStorageResource(),
        **model_resources(),
    }


__all__ = [
    "AssetStorageResource",
    "DatabaseResource",
    "ModelResource",
    "default_resources",
    "model_resources",
]
