"""Model resources: configuration plus a lazy, load-once-per-process handle.

The heavy objects live in ``variant_pipeline.models.cache.MODEL_CACHE`` (thread-safe, keyed by
kind, source, device and dtype), so one vision-language model instance serves both vlm_analyze
and vlm_judge in a run, and a run that only re-does iou_eval loads no model at all. Empty
fields fall back to the settings (environment), which default to the tiny offline bundle.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from variant_pipeline.config import Settings, load_settings


def _settings() -> Settings:
    return load_settings()


class _ModelResource(dg.ConfigurableResource):
    device: str = ""
    dtype: str = ""

    def _device(self) -> str:
        return self.device or _settings().device

    def _dtype(self) -> str:
        return self.dtype or _settings().dtype


class VisionLanguageModelResource(_ModelResource):
    """LLaVA (or another image-text-to-text model) through transformers."""

    model: str = ""
    load_in_8bit: bool = False

    def location(self) -> str:
        return self.model or _settings().vlm_model

    def get(self) -> Any:
        from variant_pipeline.models.vlm import VlmBackend

        return VlmBackend.load(
            self.location(), self._device(), self._dtype(), load_in_8bit=self.load_in_8bit,
            allow_network=_settings().allow_network,
        )


class DetectorResource(_ModelResource):
    """YOLO through ultralytics."""

    model: str = ""

    def location(self) -> str:
        return self.model or _settings().detector_model

    def get(self) -> Any:
        from variant_pipeline.models.detector import Detector

        return Detector.load(self.location(), self._device(), self._dtype(),
                             allow_network=_settings().allow_network)


class ImageGeneratorResource(_ModelResource):
    """Diffusers text-to-image and inpainting pipelines (each loads when first used)."""

    text2img_model: str = ""
    inpaint_model: str = ""

    def location(self) -> str:
        return f"{self.text2img_model or _settings().text2img_model} | {self.inpaint_model or _settings().inpaint_model}"

    def get(self) -> Any:
        from variant_pipeline.models.image_gen import ImageGenerator

        s = _settings()
        return ImageGenerator.create(
            self.text2img_model or s.text2img_model, self.inpaint_model or s.inpaint_model,
            self._device(), self._dtype(), allow_network=s.allow_network,
        )


class TextModelResource(_ModelResource):
    """The text model: a local causal LM, or an OpenAI-compatible API (VP_TEXT_BACKEND=openai)."""

    def get(self) -> Any:
        from variant_pipeline.work.text_model import text_model_from_settings

        return text_model_from_settings(_settings())


class OcrResource(dg.ConfigurableResource):
    """Tesseract OCR (Korean + English)."""

    tesseract_cmd: str = ""

    def get(self) -> Any:
        from variant_pipeline.work.ocr import TesseractOcr

        return TesseractOcr(cmd=self.tesseract_cmd or _settings().tesseract_cmd)


def model_load_counts() -> dict[str, int]:
    """Loads per model kind in this process, for run metadata and the one-load-per-run check."""
    from variant_pipeline.models.cache import MODEL_CACHE

    counts: dict[str, int] = {}
    for (kind, source, _device, _dtype), n in MODEL_CACHE.load_counts().items():
        counts[f"{kind}:{source}"] = counts.get(f"{kind}:{source}", 0) + n
    return counts
