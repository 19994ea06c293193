"""iou_eval: overlap of the text and placement boxes with the detected forbidden objects."""

from __future__ import annotations

import time

from variant_pipeline.handlers.base import HandlerContext, StageOutcome, elapsed_ms, evaluation_outcome
from variant_pipeline.handlers.rows import detections_of, overlay_of, variant_of
from variant_pipeline.work.types import NormBox


def run(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.iou import evaluate_iou

    variant = variant_of(ctx)
    overlay = overlay_of(ctx, variant)
    layout = overlay.layout
    detections = detections_of(ctx, variant, overlay.image.width, overlay.image.height)
    start = time.perf_counter()
    metrics = evaluate_iou(NormBox(*layout["box"]), NormBox(*layout["text_box"]), detections)
    return evaluation_outcome(
        variant, overlay.overlay_id, "iou", metrics.to_dict(), elapsed_ms(start),
        {"max_iou_text": metrics.max_iou_text, "max_iou_placement": metrics.max_iou_placement,
         "overlap_detected": metrics.overlap_detected, "forbidden_detections": metrics.detection_count},
    )
