"""Where models come from, and a thread-safe load-once-per-process cache.

The original loaded LLaVA once per concurrent request until a lock was added; here every
model family goes through one cache keyed by ``(kind, source, device, dtype)`` with a per-key
double-checked lock, and a load counter per key that tests can read.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

BUILD_HINT = "build the tiny offline bundle with `variant-pipeline models build-tiny DIR` and set VP_MODELS_DIR=DIR"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotFoundError(FileNotFoundError):
    """A configured model that is neither on disk nor (offline) in a local cache."""


def _network_allowed(allow_network: bool | None) -> bool:
    if allow_network is not None:
        return allow_network
    return os.environ.get("VP_ALLOW_NETWORK", "").lower() in ("1", "true", "yes", "on")


def _looks_local(location: str) -> bool:
    return (
        os.path.isabs(location) or location.startswith(("./", "../", "~"))
        or os.path.exists(os.path.expanduser(location))
    )


def resolve_hf_source(location: str, kind: str, *, marker: str = "config.json",
                      allow_network: bool | None = None) -> str:
    """A local directory, or a hub id that is allowed (network on) or already in the HF cache.

    ``marker`` is a file the model's directory must contain (``config.json`` for transformers,
    ``model_index.json`` for diffusers pipelines). Never starts a download while offline.
    """
    location = str(location)
    if _looks_local(location):
        path = Path(location).expanduser()
        if not path.is_dir():
            raise ModelNotFoundError(f"{kind} model not found at {path}: {BUILD_HINT}, "
                                     f"or point the setting at a model directory or hub id")
        if not (path / marker).is_file():
            raise ModelNotFoundError(f"{kind} model directory {path} has no {marker}; "
                                     f"it is not a saved model ({BUILD_HINT})")
        return str(path)
    if not _HUB_ID.match(location):
        raise ModelNotFoundError(f"{kind} model {location!r} is neither an existing path nor a hub id "
                                 f"(owner/name); {BUILD_HINT}")
    if _network_allowed(allow_network):
        return location
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(location, marker)
    if isinstance(cached, str):
        return location
    raise ModelNotFoundError(
        f"{kind} model {location!r} is not in the local Hugging Face cache and the network is off; "
        f"set VP_ALLOW_NETWORK=1 to download it, or {BUILD_HINT}"
    )


def resolve_yolo_source(location: str, *, allow_network: bool | None = None) -> str:
    """A local ``.pt``/``.yaml`` file; a bare weight name (``yolov8x-seg.pt``) only with the network on."""
    location = str(location)
    path = Path(location).expanduser()
    if path.is_file():
        return str(path)
    if _looks_local(location) or os.sep in location:
        raise ModelNotFoundError(f"detector model not found at {path}: {BUILD_HINT}, "
                                 f"or set VP_DETECTOR_MODEL to a YOLO .pt file")
    if _network_allowed(allow_network):
        return location  # ultralytics downloads its own release assets by bare name
    raise ModelNotFoundError(
        f"detector model {location!r} is not a local file and the network is off; put the weights on "
        f"disk and set VP_DETECTOR_MODEL to the path, set VP_ALLOW_NETWORK=1, or {BUILD_HINT}"
    )


CacheKey = tuple[str, str, str, str]


class ModelCache:
    """Load each ``(kind, source, device, dtype)`` at most once per process, from any number of threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key_locks: dict[CacheKey, threading.Lock] = {}
        self._models: dict[CacheKey, Any] = {}
        self._loads: dict[CacheKey, int] = {}

    @staticmethod
    def key(kind: str, source: str, device: Any, dtype: Any) -> CacheKey:
        return (kind, str(source), str(device), str(dtype))

    def get_or_load(self, kind: str, source: str, device: Any, dtype: Any, loader: Callable[[], T]) -> T:
        key = self.key(kind, source, device, dtype)
        model = self._models.get(key)
        if model is not None:  # fast path, no lock
            return model
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        # Per-key lock: a slow LLaVA load does not block a YOLO load in another thread.
        with key_lock:
            model = self._models.get(key)
            if model is None:
                model = loader()
                self._models[key] = model
                self._loads[key] = self._loads.get(key, 0) + 1
            return model

    def load_count(self, kind: str | None = None, source: str | None = None,
                   device: Any = None, dtype: Any = None) -> int:
        """Loads so far: of one key when all parts are given, else summed over the keys that match."""
        def matches(k: CacheKey) -> bool:
            parts = (kind, None if source is None else str(source),
                     None if device is None else str(device), None if dtype is None else str(dtype))
            return all(p is None or p == v for p, v in zip(parts, k, strict=True))

        with self._lock:
            return sum(n for k, n in self._loads.items() if matches(k))

    def load_counts(self) -> dict[CacheKey, int]:
        with self._lock:
            return dict(self._loads)

    def clear(self) -> None:
        """Drop every model (tests, benchmarks); counters restart at zero."""
        with self._lock:
            self._models.clear()
            self._loads.clear()
            self._key_locks.clear()


# The process-wide cache the resources use.
MODEL_CACHE = ModelCache()
