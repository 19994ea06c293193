"""vlm_judge: the vision-language model's verdict on the finished ad, against the brief (stored as
the variant's ``judge`` trace)."""

from __future__ import annotations

import time

from variant_pipeline.data.engine import Connection
from variant_pipeline.data.stage_outputs import upsert_vlm_trace
from variant_pipeline.handlers.base import HandlerContext, StageOutcome, elapsed_ms, stage_model
from variant_pipeline.handlers.brief import ensure_brief
from variant_pipeline.handlers.rows import overlay_of, variant_of


def run(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.vlm import JudgeInput, judge_batch

    variant = variant_of(ctx)
    overlay = overlay_of(ctx, variant)
    layout = overlay.layout
    brief = ensure_brief(ctx, variant.job_id)
    start = time.perf_counter()
    [verdict] = judge_batch(ctx.models.get(stage_model("vlm_judge")), [JudgeInput(
        image=overlay.image,
        brief=brief,
        headline=layout.get("text") or brief.ad_copy_kor,
        seed=ctx.settings.seed_base + variant.creation_order,
    )])
    latency = elapsed_ms(start)
    model = ctx.models.describe(stage_model("vlm_judge"))

    def write(conn: Connection) -> None:
        upsert_vlm_trace(conn, variant, "judge", model,
                         {"overlay_id": overlay.overlay_id, "overlaid_asset_id": variant.overlaid_img_asset_id,
                          "brief": {"overlay_text": layout.get("text"), "ad_copy_eng": brief.ad_copy_eng,
                                    "description": brief.desc_eng}},
                         verdict.to_dict(), latency)

    return StageOutcome(
        write=write,
        metadata={"on_brief": verdict.on_brief, "occlusion": verdict.occlusion, "contrast_ok": verdict.contrast_ok,
                  "cta_present": verdict.cta_present, "issues": list(verdict.issues),
                  "unparsed": list(verdict.unparsed), "latency_ms": latency},
        model=model,
    )
