"""Model resources: one ``ModelResource`` per registered model family, under the family's name.

This is the one place that decides where a model runs. With ``VP_MODEL_BACKEND=ray`` a served
family's ``get()`` returns a client of its Ray Serve application (``models/serve_client.py``), with
the same methods as the model object. Otherwise (``local``, the default) it is in this process:
``get()`` returns ``family.load(settings)``, and the loaders keep the heavy objects in
``variant_pipeline.models.cache.MODEL_CACHE`` (thread-safe, keyed by kind, source, device and
dtype), so one vision-language model instance serves both vlm_analyze and vlm_judge in a run,
and a run that only re-does iou_eval loads no model at all.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from variant_pipeline.config import Settings, load_settings, with_values
from variant_pipeline.models import registry
from variant_pipeline.models.registry import (
    ModelFamily,
    family,
    served_by_ray,
    setting_variable,
    tiny_defaults,
)
from variant_pipeline.models.serve_options import serve_options


class ModelResource(dg.ConfigurableResource):
    """A model family's handle. ``overrides`` replace settings for this resource only, by
    Settings field name or a family's location setting (``{"device": "cpu"}``,
    ``{"vlm_model": "llava-hf/llava-1.5-7b-hf"}``, ``{"vlm_load_in_8bit": "true"}``); empty: the
    environment (config.py, and for the location settings the registry's rows) decides."""

    family: str
    overrides: dict[str, str] = {}

    def model_family(self) -> ModelFamily:
        return family(self.family)

    def settings(self) -> Settings:
        return _with_overrides(load_settings(), self.overrides)

    def location(self) -> str:
        return self.model_family().location(self.settings())

    def get(self, deadline: float | None = None) -> Any:
        """The model object, or its served client; ``deadline`` (``time.monotonic()``) bounds
        every served call (the stage's time limit)."""
        settings = self.settings()
        if served_by_ray(self.model_family(), settings):
            from variant_pipeline.models.serve_client import served

            return served(self.family, settings, deadline)
        return self.model_family().load(settings)


def _with_overrides(settings: Settings, overrides: dict[str, str]) -> Settings:
    if not overrides:
        return settings
    locations = tiny_defaults(settings.models_dir)
    environ = dict(settings.environ)
    values: dict[str, str] = {}
    for name, text in overrides.items():
        if name in locations:  # a family's location setting: read from the settings' environment
            environ[setting_variable(name)] = text
        else:
            values[name] = text
    return with_values(settings, values, source="model resource override", environ=environ)


def model_resources() -> dict[str, ModelResource]:
    """One resource per registered family, keyed by its name (the key stages ask for).

    The families' own settings (``VP_SERVE_*``) are checked here, so a code location with a bad
    value fails to load with the variable named, as one with any other bad setting does.
    """
    serve_options(load_settings())
    return {fam.name: ModelResource(family=fam.name) for fam in registry.FAMILIES}


def model_load_counts() -> dict[str, int]:
    """Loads per model kind in this process, for run metadata and the one-load-per-run check."""
    from variant_pipeline.models.cache import MODEL_CACHE

    counts: dict[str, int] = {}
    for (kind, source, _device, _dtype), n in MODEL_CACHE.load_counts().items():
        counts[f"{kind}:{source}"] = counts.get(f"{kind}:{source}", 0) + n
    return counts
