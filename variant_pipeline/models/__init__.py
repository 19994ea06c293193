"""The model layer: loading (offline by default), a load-once cache, device/dtype, batch backends.

Submodules import the heavy libraries lazily where they can, so ``import variant_pipeline.models``
stays cheap. Always ``import variant_pipeline`` first: it sets the offline switches.
"""

from variant_pipeline.models.cache import MODEL_CACHE, ModelCache, ModelNotFoundError
from variant_pipeline.models.device import DeviceConfigError, resolve_device, resolve_dtype

__all__ = [
    "MODEL_CACHE", "DeviceConfigError", "ModelCache", "ModelNotFoundError", "resolve_device",
    "resolve_dtype",
]
