"""Device and dtype selection for every model family.

``auto`` picks CUDA when present (fp16 there, fp32 on CPU); explicit values are honoured and checked,
so a typo or a missing GPU is a clear error at load time rather than a silent CPU fallback.
"""

from __future__ import annotations

import torch

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


class DeviceConfigError(ValueError):
    """A device or dtype setting that cannot be honoured."""


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` → ``cuda`` when available else ``cpu``; ``cpu``, ``cuda``, ``cuda:N``, ``mps`` as given."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise DeviceConfigError(
            f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps (VP_DEVICE)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceConfigError(f"device {spec!r} requested but CUDA is not available (VP_DEVICE)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceConfigError(
                f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceConfigError("device 'mps' requested but MPS is not available (VP_DEVICE)")
    elif device.type != "cpu":
        raise DeviceConfigError(f"unsupported device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(spec: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``auto`` → fp16 on CUDA, fp32 elsewhere; otherwise float32/float16/bfloat16 (and short forms)."""
    if isinstance(spec, torch.dtype):
        return spec
    spec = (spec or "auto").strip().lower().removeprefix("torch.")
    if spec == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[spec]
    except KeyError:
        raise DeviceConfigError(
            f"unknown dtype {spec!r}; use auto, float32, float16 or bfloat16 (VP_DTYPE)"
        ) from None


def resolve(device: str | torch.device | None, dtype: str | torch.dtype | None) -> tuple[torch.device, torch.dtype]:
    d = resolve_device(device)
    return d, resolve_dtype(dtype, d)
