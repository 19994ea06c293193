"""The model registry: one row per model family, from which everything model-shaped derives.

The Dagster resources (one ``ModelResource`` per family, keyed by its name), the asset kinds,
the ``gpu`` pool membership, the tiny offline bundle (its layout and the settings' defaults) and
the handlers' model lookups all read ``FAMILIES``. A stage names its family by ``Stage.model``.

Adding a model family: a row here, its loader module (a ``load(settings)`` that returns the
in-process model object, load-once through ``MODEL_CACHE``) and its tiny builder in ``tiny.py``;
its location setting is a field in ``config.Settings`` whose default comes from ``tiny``.

Importing this module is cheap: loaders and builders are named by module and imported on call,
so the daemon and the CLI never import torch, transformers, diffusers or ultralytics through it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from variant_pipeline.config import Settings


def _lazy(module: str, attr: str) -> Callable[..., Any]:
    """``module.attr``, imported when first called (keeps heavy libraries out of import time)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__qualname__ = call.__name__ = f"{module}.{attr}"
    return call


@dataclass(frozen=True)
class TinyModel:
    """One model of the tiny offline bundle: where it lies and which setting points at it."""

    setting: str  # the Settings field whose default is this path
    path: str  # relative to the bundle directory (VP_MODELS_DIR)
    build: Callable[[Path], Path]  # writes the model at the given path, returns it


@dataclass(frozen=True)
class ModelFamily:
    name: str  # resource key and Stage.model value
    description: str
    location: Callable[[Settings], str]  # what is loaded (path / hub id / API), for the UI and status
    load: Callable[[Settings], Any]  # the in-process model object (load-once per process)
    tiny: tuple[TinyModel, ...]  # its models in the tiny offline bundle (none: nothing to build)
    kinds: frozenset[str]  # Dagster asset kinds
    accelerator: bool  # wants a GPU: its stages share the "gpu" concurrency pool
    served: bool  # may run behind a model server (a process-local engine may not)

    @property
    def build_tiny(self) -> Callable[[Path], dict[str, Path]] | None:
        """Writes this family's tiny model(s) under a bundle dir; returns ``{settings field: path}``."""
        if not self.tiny:
            return None

        def build(bundle_dir: Path) -> dict[str, Path]:
            return {t.setting: t.build(Path(bundle_dir) / t.path) for t in self.tiny}

        return build


def _text_location(s: Settings) -> str:
    return f"{s.text_backend}:{s.openai_model if s.text_backend == 'openai' else s.text_model}"


# In the order the tiny bundle is built.
FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily(
        name="vlm",
        description="A vision-language model (LLaVA or another image-text-to-text model) through transformers.",
        location=lambda s: s.vlm_model,
        load=_lazy("variant_pipeline.models.vlm", "load_vlm"),
        tiny=(TinyModel("vlm_model", "llava", _lazy("variant_pipeline.models.tiny", "build_tiny_llava")),),
        kinds=frozenset({"transformers", "pytorch"}),
        accelerator=True,
        served=True,
    ),
    ModelFamily(
        name="detector",
        description="A YOLO object detector through ultralytics.",
        location=lambda s: s.detector_model,
        load=_lazy("variant_pipeline.models.detector", "load_detector"),
        # ultralytics takes the model scale from the file name: it must start with "yolov8n".
        tiny=(TinyModel("detector_model", "yolo/yolov8n.pt", _lazy("variant_pipeline.models.tiny", "build_tiny_yolo")),),
        kinds=frozenset({"ultralytics", "pytorch"}),
        accelerator=True,
        served=True,
    ),
    ModelFamily(
        name="image_generator",
        description="Diffusers text-to-image and inpainting pipelines (each loads when first used).",
        location=lambda s: f"{s.text2img_model} | {s.inpaint_model}",
        load=_lazy("variant_pipeline.models.image_gen", "load_image_generator"),
        tiny=(TinyModel("text2img_model", "sd-text2img", _lazy("variant_pipeline.models.tiny", "build_tiny_text2img")),
              TinyModel("inpaint_model", "sd-inpaint", _lazy("variant_pipeline.models.tiny", "build_tiny_inpaint"))),
        kinds=frozenset({"diffusers", "pytorch"}),
        accelerator=True,
        served=True,
    ),
    ModelFamily(
        name="text_model",
        description="The text model: a local causal LM, or an OpenAI-compatible API (VP_TEXT_BACKEND=openai).",
        location=_text_location,
        load=_lazy("variant_pipeline.models.text", "text_model_from_settings"),
        tiny=(TinyModel("text_model", "causal-lm", _lazy("variant_pipeline.models.tiny", "build_tiny_causal_lm")),),
        kinds=frozenset({"transformers"}),
        accelerator=True,
        served=True,
    ),
    ModelFamily(
        name="ocr",
        description="Tesseract OCR (Korean + English) through its command line.",
        location=lambda s: f"tesseract ({s.tesseract_cmd})",
        load=_lazy("variant_pipeline.models.ocr", "load_ocr"),
        tiny=(),  # a system binary with its language data, not a model file
        kinds=frozenset({"tesseract"}),
        accelerator=False,
        served=False,  # a subprocess per call: nothing to share between runs
    ),
)

# Dagster kinds of a stage that uses no model.
NO_MODEL_KINDS: frozenset[str] = frozenset({"python"})


def family(name: str) -> ModelFamily:
    for fam in FAMILIES:
        if fam.name == name:
            return fam
    raise ValueError(f"unknown model family {name!r}; known families: {', '.join(f.name for f in FAMILIES)}")


def family_names() -> tuple[str, ...]:
    return tuple(f.name for f in FAMILIES)


def stages_using(name: str) -> tuple[str, ...]:
    """The stages whose ``Stage.model`` is this family, in pipeline order."""
    from variant_pipeline.stages import STAGES

    family(name)
    return tuple(s.name for s in STAGES if s.model == name)


def kinds_for(model: str | None) -> frozenset[str]:
    """Dagster kinds of a stage that uses ``model`` (None: no model)."""
    return NO_MODEL_KINDS if model is None else family(model).kinds


def wants_accelerator(model: str | None) -> bool:
    return model is not None and family(model).accelerator


def tiny_defaults(bundle_dir: Path) -> dict[str, str]:
    """``{settings field: path}`` of every tiny model under ``bundle_dir``: the settings' defaults."""
    return {t.setting: str(Path(bundle_dir) / t.path) for fam in FAMILIES for t in fam.tiny}


def tiny_settings_in_use(settings: Settings) -> list[str]:
    """The settings fields (``vlm_model``, ...) that still point at the tiny random-weight bundle."""
    return [name for name, path in tiny_defaults(settings.models_dir).items() if getattr(settings, name) == path]
