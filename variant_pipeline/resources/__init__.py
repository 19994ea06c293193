"""Dagster resources: database, asset storage and the shared model handles."""

from variant_pipeline.resources.database import AssetStorageResource, DatabaseResource
from variant_pipeline.resources.models import (
    DetectorResource,
    ImageGeneratorResource,
    OcrResource,
    TextModelResource,
    VisionLanguageModelResource,
)


def default_resources() -> dict[str, object]:
    """Every resource the assets need, configured from the environment (one place: config.py)."""
    return {
        "database": DatabaseResource(),
        "asset_storage": AssetStorageResource(),
        "vlm": VisionLanguageModelResource(),
        "detector": DetectorResource(),
        "image_generator": ImageGeneratorResource(),
        "text_model": TextModelResource(),
        "ocr": OcrResource(),
    }


__all__ = [
    "AssetStorageResource",
    "DatabaseResource",
    "DetectorResource",
    "ImageGeneratorResource",
    "OcrResource",
    "TextModelResource",
    "VisionLanguageModelResource",
    "default_resources",
]
