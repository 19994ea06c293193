"""yolo_detect: detector boxes per variant, the forbidden ones flagged, and a forbidden-region mask.

Forbidden class names are checked against the model's own class names (the original listed
``hand`` and ``plate``, which COCO models do not have, so they silently never matched).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from variant_pipeline.work.types import Detection, NormBox, RawDetection


class ObjectDetector(Protocol):
    """What the stage needs from a detector backend (``models.detector.Detector``, in this process
    or served by Ray): its class names and one batched call."""

    @property
    def class_names(self) -> Mapping[int, str]: ...

    def predict(self, images: Sequence[Image.Image], conf: float = 0.25,
                iou: float = 0.45) -> list[list[RawDetection]]: ...


class ForbiddenClassError(ValueError):
    """A configured forbidden class name that the detector cannot produce."""


def validate_forbidden_classes(forbidden: Iterable[str], class_names: Mapping[int, str]) -> frozenset[str]:
    """Return the forbidden names (exact model spelling); unknown names raise with the valid list."""
    by_lower = {n.lower(): n for n in class_names.values()}
    wanted = [f.strip() for f in forbidden if f.strip()]
    unknown = sorted({f for f in wanted if f.lower() not in by_lower})
    if unknown:
        raise ForbiddenClassError(
            f"forbidden class name(s) {unknown} are not classes of this detector "
            f"(VP_FORBIDDEN_CLASSES); valid names: {', '.join(sorted(by_lower.values()))}"
        )
    return frozenset(by_lower[f.lower()] for f in wanted)


@dataclass(frozen=True)
class DetectionResult:
    """All detections on one variant image; ``forbidden_mask`` is "L", 255 inside forbidden boxes."""

    width: int
    height: int
    detections: tuple[Detection, ...]
    forbidden_mask: Image.Image

    @property
    def forbidden(self) -> tuple[Detection, ...]:
        return tuple(d for d in self.detections if d.forbidden)

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height,
                "detections": [d.to_dict() for d in self.detections]}


def to_detections(raw: Sequence[RawDetection], width: int, height: int,
                  forbidden: frozenset[str]) -> tuple[Detection, ...]:
    """Clip boxes to the image, add normalized boxes and the forbidden flag; drop empty boxes."""
    out = []
    for r in raw:
        x1, y1, x2, y2 = r.box_px
        x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
        y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
        if x2 <= x1 or y2 <= y1:
            continue
        box_px = (x1, y1, x2, y2)
        out.append(Detection(label=r.label, class_id=r.class_id, score=r.score, box_px=box_px,
                             box=NormBox.from_px(box_px, width, height), forbidden=r.label in forbidden))
    # Highest score first, a stable order for storage and for tests.
    return tuple(sorted(out, key=lambda d: (-d.score, d.box_px)))


def forbidden_mask(detections: Iterable[Detection], width: int, height: int) -> Image.Image:
    """255 on every pixel a forbidden box touches (rounded outwards), 0 elsewhere."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for d in detections:
        if not d.forbidden:
            continue
        x1, y1, x2, y2 = d.box_px
        c1, r1 = max(0, math.floor(x1)), max(0, math.floor(y1))
        c2, r2 = min(width, math.ceil(x2)), min(height, math.ceil(y2))
        mask[r1:r2, c1:c2] = 255
    return Image.fromarray(mask, mode="L")


def detect(detector: ObjectDetector, images: Sequence[Image.Image], *, forbidden_classes: Iterable[str],
           conf: float = 0.25, iou: float = 0.45) -> list[DetectionResult]:
    """One ``DetectionResult`` per image, in order, from one batched detector call."""
    forbidden = validate_forbidden_classes(forbidden_classes, detector.class_names)
    raws = detector.predict(images, conf=conf, iou=iou)
    results = []
    for image, raw in zip(images, raws, strict=True):
        w, h = image.size
        dets = to_detections(raw, w, h, forbidden)
        results.append(DetectionResult(w, h, dets, forbidden_mask(dets, w, h)))
    return results
