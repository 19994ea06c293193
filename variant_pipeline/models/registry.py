"""The model registry: one row per model family, from which everything model-shaped derives.

The Dagster resources (one ``ModelResource`` per family, keyed by its name), the asset kinds,
the ``gpu`` pool membership, the tiny offline bundle, the model location settings (``VP_<SETTING>``,
defaulting to the tiny bundle), the Ray Serve deployments, their batched methods, batch defaults
and run-side clients all read ``FAMILIES``. A stage names its family by ``Stage.model``.

Adding a model family: a row here, its loader module (a ``load(settings)`` that returns the
in-process model object, load-once through ``MODEL_CACHE``) and its tiny builder in ``tiny.py``.

Importing this module is cheap: loaders and builders are named by module and imported on call,
so the daemon and the CLI never import torch, transformers, diffusers or ultralytics through it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from variant_pipeline.config import apply_offline_defaults

if TYPE_CHECKING:
    from collections.abc import Sequence

    from variant_pipeline.config import Settings
    from variant_pipeline.work.text_model import ChatMessage, Completion


def _lazy(module: str, attr: str) -> Callable[..., Any]:
    """``module.attr``, imported when first called (keeps heavy libraries out of import time).

    The model libraries read their offline switches when they are imported, so they are set first.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        apply_offline_defaults()
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__qualname__ = call.__name__ = f"{module}.{attr}"
    return call


@dataclass(frozen=True)
class TinyModel:
    """One model of the tiny offline bundle: where it lies and which setting points at it."""

    setting: str  # the location setting (VP_<SETTING> in the environment) whose default is this path
    path: str  # relative to the bundle directory (VP_MODELS_DIR)
    build: Callable[[Path], Path]  # writes the model at the given path, returns it

    def location(self, settings: Settings) -> str:
        """The setting's value: ``VP_<SETTING>`` (a local path or a hub id), else this tiny model."""
        return settings.environ.get(setting_variable(self.setting)) or str(settings.models_dir / self.path)


@dataclass(frozen=True)
class BatchedMethod:
    """How the calls of one model method combine into one call (on a Ray Serve replica)."""

    items: tuple[str, ...]  # per-item sequences, concatenated across the coalesced calls
    spread: tuple[str, ...] = ()  # one value for all items or one per item (seeds, negative prompts)
    same_size: str | None = None  # these images must share one size in a model call (inpainting)


def _always(_settings: Settings) -> bool:
    return True


@dataclass(frozen=True)
class Serving:
    """How a family runs behind Ray Serve: one deployment per family, whose replicas coalesce
    the runs' calls of ``methods`` into one model call each; the run's client has those methods,
    ``attributes`` (read once per client) and ``adapters`` (methods written with the others)."""

    methods: dict[str, BatchedMethod]  # each returns one result per item, in order
    attributes: tuple[str, ...] = ()
    adapters: dict[str, Callable[..., Any]] = field(default_factory=dict)  # (client, *args, **kwargs)
    batch: tuple[int, float] = (8, 0.05)  # default max batch size, longest wait (s) for it to fill
    when: Callable[[Settings], bool] = _always  # with these settings the family is served


@dataclass(frozen=True)
class ModelFamily:
    name: str  # resource key and Stage.model value
    description: str
    location: Callable[[Settings], str]  # what is loaded (path / hub id / API), for the UI and status
    load: Callable[[Settings], Any]  # the in-process model object (load-once per process)
    tiny: tuple[TinyModel, ...]  # its models in the tiny offline bundle (none: nothing to build)
    kinds: frozenset[str]  # Dagster asset kinds
    accelerator: bool  # wants a GPU: its stages share the "gpu" concurrency pool
    served: Serving | None  # how it runs behind Ray Serve; None: always in the run (a process-local engine)

    @property
    def build_tiny(self) -> Callable[[Path], dict[str, Path]] | None:
        """Writes this family's tiny model(s) under a bundle dir; returns ``{settings field: path}``."""
        if not self.tiny:
            return None

        def build(bundle_dir: Path) -> dict[str, Path]:
            return {t.setting: t.build(Path(bundle_dir) / t.path) for t in self.tiny}

        return build

    def setting(self, settings: Settings, name: str | None = None) -> str:
        """This row's location setting ``name`` (its only one when omitted). A loader reads its
        own row's, so a replica given the row needs no registry lookup."""
        matches = [t for t in self.tiny if name in (None, t.setting)]
        if len(matches) != 1:
            raise ValueError(f"model family {self.name!r} declares the location settings "
                             f"{[t.setting for t in self.tiny]}, asked for {name!r}")
        return matches[0].location(settings)


def model_location(settings: Settings, name: str) -> str:
    """A location setting any row declares (``TinyModel.setting``, say ``vlm_model``)."""
    for fam in FAMILIES:
        if any(t.setting == name for t in fam.tiny):
            return fam.setting(settings, name)
    raise ValueError(f"unknown model setting {name!r}; the families declare: {', '.join(tiny_defaults(Path()))}")


def setting_variable(name: str) -> str:
    """The environment variable of a location setting: ``vlm_model`` -> ``VP_VLM_MODEL``."""
    return f"VP_{name.upper()}"


def _text_location(s: Settings) -> str:
    return f"{s.text_backend}:{s.openai_model if s.text_backend == 'openai' else model_location(s, 'text_model')}"


def _complete_one(client: Any, messages: Sequence[ChatMessage], *, temperature: float, max_tokens: int,
                  json_mode: bool = False, seed: int | None = None) -> Completion:
    """The text model's ``complete`` on its served ``complete_batch``: one request, one answer."""
    from variant_pipeline.work.text_model import ChatRequest

    return client.complete_batch([ChatRequest(tuple(messages), temperature, max_tokens, json_mode, seed)])[0]


# In the order the tiny bundle is built.
FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily(
        name="vlm",
        description="A vision-language model (LLaVA or another image-text-to-text model) through transformers.",
        location=lambda s: model_location(s, "vlm_model"),
        load=_lazy("variant_pipeline.models.vlm", "load_vlm"),
        tiny=(TinyModel("vlm_model", "llava", _lazy("variant_pipeline.models.tiny", "build_tiny_llava")),),
        kinds=frozenset({"transformers", "pytorch"}),
        accelerator=True,
        served=Serving(methods={"generate": BatchedMethod(items=("images", "prompts"), spread=("seed",))},
                       batch=(8, 0.05)),
    ),
    ModelFamily(
        name="detector",
        description="A YOLO object detector through ultralytics.",
        location=lambda s: model_location(s, "detector_model"),
        load=_lazy("variant_pipeline.models.detector", "load_detector"),
        # ultralytics takes the model scale from the file name: it must start with "yolov8n".
        tiny=(TinyModel("detector_model", "yolo/yolov8n.pt", _lazy("variant_pipeline.models.tiny", "build_tiny_yolo")),),
        kinds=frozenset({"ultralytics", "pytorch"}),
        accelerator=True,
        served=Serving(methods={"predict": BatchedMethod(items=("images",))}, attributes=("class_names",),
                       batch=(16, 0.02)),  # detection is cheap per image: large batches
    ),
    ModelFamily(
        name="image_generator",
        description="Diffusers text-to-image and inpainting pipelines (each loads when first used).",
        location=lambda s: f"{model_location(s, 'text2img_model')} | {model_location(s, 'inpaint_model')}",
        load=_lazy("variant_pipeline.models.image_gen", "load_image_generator"),
        tiny=(TinyModel("text2img_model", "sd-text2img", _lazy("variant_pipeline.models.tiny", "build_tiny_text2img")),
              TinyModel("inpaint_model", "sd-inpaint", _lazy("variant_pipeline.models.tiny", "build_tiny_inpaint"))),
        kinds=frozenset({"diffusers", "pytorch"}),
        accelerator=True,
        served=Serving(
            methods={
                "text_to_image": BatchedMethod(items=("prompts", "seeds"), spread=("negative",)),
                "inpaint": BatchedMethod(items=("images", "masks", "prompts", "seeds"), spread=("negative",),
                                         same_size="images"),
            },
            batch=(4, 0.05),  # a pipeline's memory grows with its batch: wait for fewer calls
        ),
    ),
    ModelFamily(
        name="text_model",
        description="The text model: a local causal LM, or an OpenAI-compatible API (VP_TEXT_BACKEND=openai).",
        location=_text_location,
        load=_lazy("variant_pipeline.models.text", "text_model_from_settings"),
        tiny=(TinyModel("text_model", "causal-lm", _lazy("variant_pipeline.models.tiny", "build_tiny_causal_lm")),),
        kinds=frozenset({"transformers"}),
        accelerator=True,
        served=Serving(
            methods={"complete_batch": BatchedMethod(items=("requests",))},
            attributes=("name", "provider"),
            adapters={"complete": _complete_one},
            batch=(8, 0.02),
            # An OpenAI-compatible API is already a server: the run keeps its HTTP client.
            when=lambda s: s.text_backend == "local",
        ),
    ),
    ModelFamily(
        name="ocr",
        description="Tesseract OCR (Korean + English) through its command line.",
        location=lambda s: f"tesseract ({s.tesseract_cmd})",
        load=_lazy("variant_pipeline.models.ocr", "load_ocr"),
        tiny=(),  # a system binary with its language data, not a model file
        kinds=frozenset({"tesseract"}),
        accelerator=False,
        served=None,  # a subprocess per call: nothing to share between runs
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
    """The location settings (``vlm_model``, ...) that still point at the tiny random-weight bundle."""
    return [name for name, path in tiny_defaults(settings.models_dir).items() if model_location(settings, name) == path]


def served_by_ray(fam: ModelFamily, settings: Settings) -> bool:
    """Whether runs reach this family through Ray Serve: the ray backend, and a row served with
    these settings."""
    return settings.model_backend == "ray" and fam.served is not None and fam.served.when(settings)
