"""iou_eval: overlap of the text with the forbidden detections (the original's IoU, on the drawn text).

The original measured only the placement box, which is usually much larger than the text
actually drawn; here both the placement box and the tight text bounding box are measured
against every forbidden detection of the variant, and the text box is the headline number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from variant_pipeline.work.types import Detection, NormBox


def clamp_box(box: NormBox) -> NormBox:
    """The part of ``box`` inside the unit square (zero-size if it lies outside)."""
    x1, y1, x2, y2 = box.to_xyxy()
    x1, x2 = sorted((min(max(x1, 0.0), 1.0), min(max(x2, 0.0), 1.0)))
    y1, y2 = sorted((min(max(y1, 0.0), 1.0), min(max(y2, 0.0), 1.0)))
    return NormBox(x1, y1, x2 - x1, y2 - y1)


def intersection_area(a: NormBox, b: NormBox) -> float:
    ax1, ay1, ax2, ay2 = a.to_xyxy()
    bx1, by1, bx2, by2 = b.to_xyxy()
    return max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))


def box_iou(a: NormBox, b: NormBox) -> float:
    """Intersection over union of two xywh boxes; 0 when the union is empty."""
    inter = intersection_area(a, b)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class DetectionOverlap:
    label: str
    class_id: int
    score: float
    box: NormBox
    iou_text: float
    iou_placement: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "class_id": self.class_id, "score": self.score,
            "box": self.box.as_list(), "iou_text": self.iou_text, "iou_placement": self.iou_placement,
        }


@dataclass(frozen=True)
class IouMetrics:
    """IoU of the tight text box (headline) and of the placement box vs each forbidden detection."""

    text_box: NormBox
    placement_box: NormBox
    detections: tuple[DetectionOverlap, ...]  # forbidden detections only, in input order
    max_iou_text: float  # the original's iou_with_food, measured on the drawn text
    max_iou_placement: float
    argmax_text_index: int | None  # index into ``detections``; None without detections
    argmax_text_label: str | None
    argmax_placement_index: int | None
    argmax_placement_label: str | None
    overlap_detected: bool  # the drawn text overlaps any forbidden detection (IoU > 0)
    placement_overlap_detected: bool

    @property
    def detection_count(self) -> int:
        return len(self.detections)

    @property
    def all_ious_text(self) -> list[float]:
        return [d.iou_text for d in self.detections]

    @property
    def all_ious_placement(self) -> list[float]:
        return [d.iou_placement for d in self.detections]

    def to_dict(self) -> dict[str, Any]:
        return {
            "iou_with_food": self.max_iou_text,
            "max_iou_text": self.max_iou_text,
            "max_iou_placement": self.max_iou_placement,
            "argmax_text_index": self.argmax_text_index,
            "argmax_text_label": self.argmax_text_label,
            "argmax_placement_index": self.argmax_placement_index,
            "argmax_placement_label": self.argmax_placement_label,
            "overlap_detected": self.overlap_detected,
            "placement_overlap_detected": self.placement_overlap_detected,
            "all_ious_text": self.all_ious_text,
            "all_ious_placement": self.all_ious_placement,
            "detection_count": self.detection_count,
            "text_box": self.text_box.as_list(),
            "placement_box": self.placement_box.as_list(),
            "detections": [d.to_dict() for d in self.detections],
        }


def _argmax(values: Sequence[float]) -> int | None:
    if not values:
        return None
    # First index of the maximum, so ties resolve the same way every time.
    return max(range(len(values)), key=lambda i: (values[i], -i))


def evaluate_iou(
    placement_box: NormBox, text_box: NormBox, detections: Sequence[Detection]
) -> IouMetrics:
    """Measure both boxes against every *forbidden* detection (non-forbidden ones are ignored).

    Boxes are normalized to the variant image, so detections from another image size compare
    correctly. No detections is a valid answer (all zeros), not an error.
    """
    text = clamp_box(text_box)
    placement = clamp_box(placement_box)
    overlaps = tuple(
        DetectionOverlap(
            label=d.label, class_id=d.class_id, score=d.score, box=clamp_box(d.box),
            iou_text=box_iou(text, clamp_box(d.box)),
            iou_placement=box_iou(placement, clamp_box(d.box)),
        )
        for d in detections
        if d.forbidden
    )
    text_ious = [o.iou_text for o in overlaps]
    placement_ious = [o.iou_placement for o in overlaps]
    ti, pi = _argmax(text_ious), _argmax(placement_ious)
    max_t = text_ious[ti] if ti is not None else 0.0
    max_p = placement_ious[pi] if pi is not None else 0.0
    return IouMetrics(
        text_box=text, placement_box=placement, detections=overlaps,
        max_iou_text=max_t, max_iou_placement=max_p,
        argmax_text_index=ti, argmax_text_label=overlaps[ti].label if ti is not None else None,
        argmax_placement_index=pi,
        argmax_placement_label=overlaps[pi].label if pi is not None else None,
        overlap_detected=max_t > 0.0, placement_overlap_detected=max_p > 0.0,
    )
