"""ocr_eval: how well OCR reads the drawn text back, on its tight box."""

from __future__ import annotations

import time

from variant_pipeline.handlers.base import (
    HandlerContext,
    StageOutcome,
    elapsed_ms,
    evaluation_outcome,
    stage_model,
)
from variant_pipeline.handlers.rows import overlay_of, variant_of


def run(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.ocr import evaluate_ocr

    variant = variant_of(ctx)
    overlay = overlay_of(ctx, variant)
    layout = overlay.layout
    start = time.perf_counter()
    metrics = evaluate_ocr(ctx.models.get(stage_model("ocr_eval")), overlay.image, layout["text_bbox_px"], layout["text"],
                           font_size_px=layout.get("font_size_px"))
    return evaluation_outcome(
        variant, overlay.overlay_id, "ocr", metrics.to_dict(), elapsed_ms(start),
        {"ocr_accuracy": metrics.ocr_accuracy, "recognized_text": metrics.recognized_text,
         "original_text": metrics.original_text, "ocr_confidence": metrics.ocr_confidence},
        model=ctx.models.describe(stage_model("ocr_eval")),
    )
