"""overlay: the short Korean ad line drawn into the planned box, in the recommended font."""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from variant_pipeline.data.engine import Connection
from variant_pipeline.data.stage_outputs import (
    replace_variant_image,
    set_variant_image,
    upsert_overlay_layout,
)
from variant_pipeline.handlers.base import (
    HandlerContext,
    StageOutcome,
    Thumbnail,
    elapsed_ms,
)
from variant_pipeline.handlers.brief import ensure_brief
from variant_pipeline.handlers.rows import font_recommendation_of, plan_of, variant_image, variant_of
from variant_pipeline.state.attempts import StageInputError


def run(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.fonts import FontCoverageError
    from variant_pipeline.work.overlay import OverlayParams, render_overlay
    from variant_pipeline.work.planner import PlannerResult

    variant = variant_of(ctx)
    image = variant_image(ctx, variant)
    plan_record = plan_of(ctx, variant)
    plan = PlannerResult.from_dict(plan_record.layout)
    font_rec = font_recommendation_of(ctx, variant)
    text = ensure_brief(ctx, variant.job_id, need=["ad_copy_kor"]).ad_copy_kor
    start = time.perf_counter()
    try:
        result = render_overlay(image, text, plan, font_rec, OverlayParams(font_path=ctx.settings.font_path))
    except (FontCoverageError, ValueError) as exc:  # the text, font or plan cannot be drawn: retrying will not help
        raise StageInputError(f"variant {variant.job_variants_id} cannot draw its overlay text {text!r}: {exc}") from exc
    latency = elapsed_ms(start)
    overlaid = ctx.store.save_image(variant.tenant_id, "overlaid", result.image)
    glyphs = ctx.store.save_image(variant.tenant_id, "glyph_mask",
                                  Image.fromarray(result.glyph_mask.astype(np.uint8) * 255, mode="L"))
    layout = result.to_dict()
    layout["glyph_mask_path"] = glyphs.relative_path

    def write(conn: Connection) -> None:
        overlaid_id = replace_variant_image(conn, variant, overlaid, "overlaid")
        replace_variant_image(conn, variant, glyphs, "glyph_mask")
        box, text_box = result.box, result.text_box
        upsert_overlay_layout(conn, variant, proposal_id=plan_record.proposal_id,
                              box=(box.x, box.y, box.w, box.h),
                              text_box=(text_box.x, text_box.y, text_box.w, text_box.h),
                              layout=layout, overlaid_asset_id=overlaid_id, latency_ms=latency)
        set_variant_image(conn, variant.job_variants_id, "overlaid_img_asset_id", overlaid_id)

    return StageOutcome(
        write=write,
        metadata={"text": text, "font": layout["font_name"], "font_size_px": result.font_size_px,
                  "color": result.color_hex, "color_source": result.color_source, "fits": result.fits,
                  "fit_reason": result.fit_reason, "box": result.box.as_list(),
                  "text_box": result.text_box.as_list(), "selection": result.selection, "latency_ms": latency},
        thumbnails=[Thumbnail("overlaid", result.image, overlaid.uri)],
    )
