"""readability_eval: contrast of the drawn colour against the pixels under the text (glyphs excluded)."""

from __future__ import annotations

import time

import numpy as np

from variant_pipeline.handlers.base import HandlerContext, StageOutcome, elapsed_ms, evaluation_outcome
from variant_pipeline.handlers.rows import open_image, overlay_of, variant_image, variant_of
from variant_pipeline.state.attempts import StageInputError


def run(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.readability import evaluate_readability

    variant = variant_of(ctx)
    overlay = overlay_of(ctx, variant)
    layout = overlay.layout
    background = variant_image(ctx, variant)  # the pixels under the text, before it was drawn
    mask_path = layout.get("glyph_mask_path")
    if not mask_path:
        raise StageInputError(f"overlay of variant {variant.job_variants_id} recorded no glyph mask")
    glyph_mask = np.asarray(
        open_image(ctx.store, mask_path, f"glyph mask of variant {variant.job_variants_id}").convert("L")
    ) > 127
    start = time.perf_counter()
    metrics = evaluate_readability(background, glyph_mask, tuple(layout["text_bbox_px"]),
                                   layout["text_color_rgb"], layout["font_size_px"], bold=bool(layout.get("bold")))
    return evaluation_outcome(
        variant, overlay.overlay_id, "readability", metrics.to_dict(), elapsed_ms(start),
        {"contrast_ratio": metrics.contrast_ratio, "contrast_ratio_p10": metrics.contrast_ratio_p10,
         "wcag_aa": metrics.wcag_aa_compliant, "wcag_aaa": metrics.wcag_aaa_compliant,
         "readability_score": metrics.readability_score},
    )
