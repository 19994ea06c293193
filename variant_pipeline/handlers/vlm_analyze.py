"""vlm_analyze: what the vision-language model sees in the generated image, whether the ad copy
fits it, and a font for the overlay text (stored as the variant's ``analyze`` trace)."""

from __future__ import annotations

import time

from variant_pipeline.data.engine import Connection
from variant_pipeline.data.stage_outputs import upsert_vlm_trace
from variant_pipeline.handlers.base import HandlerContext, StageOutcome, elapsed_ms, stage_model
from variant_pipeline.handlers.brief import ensure_brief
from variant_pipeline.handlers.rows import variant_image, variant_of


def run(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.vlm import AnalyzeInput, analyze

    variant = variant_of(ctx)
    image = variant_image(ctx, variant)
    brief = ensure_brief(ctx, variant.job_id)
    start = time.perf_counter()
    result = analyze(ctx.models.get(stage_model("vlm_analyze")), AnalyzeInput(image=image, ad_copy=brief.ad_copy_eng or None,
                                                    overlay_text=brief.ad_copy_kor or None,
                                                    seed=ctx.settings.seed_base + variant.creation_order))
    latency = elapsed_ms(start)
    model = ctx.models.describe(stage_model("vlm_analyze"))
    response = result.to_dict()

    def write(conn: Connection) -> None:
        upsert_vlm_trace(conn, variant, "analyze", model,
                         {"image_asset_id": variant.img_asset_id, "ad_copy_eng": brief.ad_copy_eng,
                          "overlay_text": brief.ad_copy_kor, "prompts": result.prompts},
                         response, latency)

    font = result.font
    return StageOutcome(
        write=write,
        metadata={"relevance": result.relevance, "valid": result.valid, "mismatch": result.mismatch,
                  "font_style": font.style, "font_name": font.name, "text_color": font.color_hex,
                  "unparsed": list(result.unparsed), "latency_ms": latency},
        model=model,
    )
