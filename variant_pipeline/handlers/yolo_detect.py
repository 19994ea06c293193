"""yolo_detect: objects in the generated image, and a mask of the forbidden ones (text must not
cover them)."""

from __future__ import annotations

import time

from variant_pipeline.data.engine import Connection
from variant_pipeline.data.stage_outputs import replace_detections, replace_variant_image
from variant_pipeline.handlers.base import HandlerContext, StageOutcome, Thumbnail, elapsed_ms, stage_model
from variant_pipeline.handlers.rows import variant_image, variant_of


def run(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.detect import detect

    variant = variant_of(ctx)
    image = variant_image(ctx, variant)
    s = ctx.settings
    start = time.perf_counter()
    [result] = detect(ctx.models.get(stage_model("yolo_detect")), [image], forbidden_classes=s.forbidden_classes,
                      conf=s.detector_conf, iou=s.detector_iou)
    latency = elapsed_ms(start)
    mask = ctx.store.save_image(variant.tenant_id, "forbidden_mask", result.forbidden_mask)
    model = ctx.models.describe(stage_model("yolo_detect"))

    def write(conn: Connection) -> None:
        mask_id = replace_variant_image(conn, variant, mask, "forbidden_mask")
        replace_detections(conn, variant, result.detections, model=model,
                           forbidden_classes=list(s.forbidden_classes), mask_asset_id=mask_id, latency_ms=latency)

    return StageOutcome(
        write=write,
        metadata={"detections": len(result.detections), "forbidden": len(result.forbidden),
                  "labels": sorted({d.label for d in result.detections}), "conf": s.detector_conf,
                  "latency_ms": latency},
        thumbnails=[Thumbnail("forbidden mask", result.forbidden_mask.convert("RGB"), mask.uri)],
        model=model,
    )
