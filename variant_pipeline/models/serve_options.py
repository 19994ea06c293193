"""Per served family, how Ray Serve runs it: ``VP_SERVE_BATCH``, ``VP_SERVE_REPLICAS``, ``VP_SERVE_GPUS``.

Each is ``FAMILY=VALUE,...`` over the registry's served families; a family not named keeps its
row's batch default (``Serving.batch``), 1 replica and no GPU. Read from the settings' snapshot of
the environment (config.py knows no model family), checked here with one line per bad value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from variant_pipeline.config import Settings, SettingsError, key_values
from variant_pipeline.models import registry
from variant_pipeline.models.registry import Serving

T = TypeVar("T")


@dataclass(frozen=True)
class ServeOptions:
    max_batch_size: int
    batch_wait_s: float  # the longest wait for a batch to fill
    replicas: int = 1
    gpus: float = 0.0  # GPUs per replica


def serve_options(settings: Settings) -> dict[str, ServeOptions]:
    """Every served family's options (``SettingsError`` naming the variable for a bad value)."""
    batch = _family_map(settings, "VP_SERVE_BATCH", _batch_setting)
    replicas = _family_map(settings, "VP_SERVE_REPLICAS", _replicas_setting)
    gpus = _family_map(settings, "VP_SERVE_GPUS", _gpus_setting)
    options = {}
    for fam in registry.FAMILIES:
        if fam.served is not None:
            max_batch, wait_s = batch.get(fam.name, fam.served.batch)
            options[fam.name] = ServeOptions(max_batch, wait_s, replicas.get(fam.name, 1), gpus.get(fam.name, 0.0))
    return options


def _family_map(settings: Settings, name: str, parse: Callable[[str, Serving], T]) -> dict[str, T]:
    """``"vlm=8:0.05,detector=16:0.02"`` -> per-family values, each checked by ``parse``."""
    served = {f.name: f.served for f in registry.FAMILIES if f.served is not None}
    values: dict[str, T] = {}
    for item, family, value in key_values(settings.environ.get(name, "")):
        if family not in served:
            raise SettingsError(f"{name}: unknown model family {family!r}; served families: {', '.join(served)}")
        try:
            values[family] = parse(value.strip(), served[family])
        except ValueError as exc:
            raise SettingsError(f"{name}: {item!r}: {exc}") from None
    return values


def _batch_setting(value: str, serving: Serving) -> tuple[int, float]:
    size, _, wait = value.partition(":")
    max_batch, wait_s = int(size), float(wait or serving.batch[1])
    if max_batch < 1 or not (math.isfinite(wait_s) and wait_s >= 0):
        raise ValueError("expected FAMILY=MAX_BATCH[:WAIT_SECONDS] with MAX_BATCH >= 1 and WAIT_SECONDS >= 0")
    return max_batch, wait_s


def _replicas_setting(value: str, _serving: Serving) -> int:
    if int(value) < 1:
        raise ValueError("a family needs at least 1 replica")
    return int(value)


def _gpus_setting(value: str, _serving: Serving) -> float:
    gpus = float(value)
    if not (math.isfinite(gpus) and gpus >= 0):
        raise ValueError("GPUs per replica must be 0 or more")
    return gpus
