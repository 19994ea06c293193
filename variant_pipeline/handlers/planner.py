"""planner: candidate boxes for the overlay text, clear of forbidden objects."""

from __future__ import annotations

import time

from variant_pipeline.data.engine import Connection
from variant_pipeline.data.stage_outputs import replace_variant_image, upsert_planner_proposal
from variant_pipeline.handlers.base import HandlerContext, StageOutcome, Thumbnail, elapsed_ms
from variant_pipeline.handlers.rows import detections_of, forbidden_mask_of, variant_image, variant_of


def run(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.planner import draw_plan, plan_placements

    variant = variant_of(ctx)
    image = variant_image(ctx, variant)
    detections = detections_of(ctx, variant, image.width, image.height)
    mask = forbidden_mask_of(ctx, variant)
    start = time.perf_counter()
    result = plan_placements(image.width, image.height, detections, mask)
    latency = elapsed_ms(start)
    viz = draw_plan(image, result, mask)
    stored = ctx.store.save_image(variant.tenant_id, "planner", viz)

    def write(conn: Connection) -> None:
        viz_id = replace_variant_image(conn, variant, stored, "planner")
        upsert_planner_proposal(conn, variant, result.to_dict(), viz_id, latency)

    best = result.proposals[0] if result.proposals else None
    return StageOutcome(
        write=write,
        metadata={"proposals": len(result.proposals), "feasible": result.feasible, "reason": result.reason,
                  "best_source": best.source if best else None, "best_box": best.box.as_list() if best else None,
                  "forbidden_regions": len(result.forbidden_boxes), "latency_ms": latency},
        thumbnails=[Thumbnail("plan", viz, stored.uri)],
    )
