"""Variant-level stage handlers: read the variant's inputs, call the pure stage work, and return
the rows to write. Every output is keyed by the variant itself (spec I1, I2, P6)."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Connection

from variant_pipeline.handlers.base import (
    HandlerContext,
    StageInputError,
    StageOutcome,
    Thumbnail,
    VariantRow,
    asset_path,
    jsonable,
    load_job_inputs,
    load_variant,
    open_image,
    replace_image_asset,
)
from variant_pipeline.handlers.brief import ensure_brief
from variant_pipeline.work.types import Detection, FontRecommendation, NormBox


def _ms(start: float) -> int:
    return int((time.perf_counter() - start) * 1000)


def _variant(ctx: HandlerContext) -> VariantRow:
    with ctx.engine.connect() as conn:
        return load_variant(conn, ctx.partition_key)


def _variant_image(ctx: HandlerContext, variant: VariantRow) -> Image.Image:
    what = f"generated image of variant {variant.job_variants_id}"
    with ctx.engine.connect() as conn:
        path = asset_path(conn, variant.img_asset_id, what)
    return open_image(ctx.store, path, f"{what} (image asset {variant.img_asset_id})").convert("RGB")


def _set_variant_column(conn: Connection, variant_id: str, column: str, value: str | None) -> None:
    assert column in ("img_asset_id", "overlaid_img_asset_id")
    conn.execute(sa.text(f"UPDATE jobs_variants SET {column} = :v WHERE job_variants_id = :id"),
                 {"v": value, "id": variant_id})


def _json(value: Any) -> str:
    return json.dumps(jsonable(value), ensure_ascii=False)


# --- img_gen ----------------------------------------------------------------------------------


def img_gen(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.img_gen import ImgGenRequest, generate_variants

    variant = _variant(ctx)
    with ctx.engine.connect() as conn:
        inputs = load_job_inputs(conn, variant.job_id)
        product_what = f"product photo of job {variant.job_id}"
        product_path = (
            asset_path(conn, inputs.product_image_asset_id, product_what)
            if inputs.product_image_asset_id else None
        )
    product = (
        open_image(ctx.store, product_path, f"{product_what} (image asset {inputs.product_image_asset_id})")
        if product_path else None
    )
    prompt = inputs.prompt
    if not (prompt or "").strip():
        # Without a prompt, the English description is the scene to draw.
        prompt = ensure_brief(ctx, variant.job_id, need=["desc_eng"]).desc_eng
    s = ctx.settings
    start = time.perf_counter()
    [generated] = generate_variants(
        ctx.models.get("image_generator"),
        ImgGenRequest(
            job_id=variant.job_id, prompt=prompt, product_image=product, n_variants=1,
            first_order=variant.creation_order, width=s.image_width, height=s.image_height,
            steps=s.diffusion_steps, seed_base=s.seed_base,
        ),
    )
    latency = _ms(start)
    stored = ctx.store.save_image(variant.tenant_id, "generated", generated.image)

    def write(conn: Connection) -> None:
        asset_id = replace_image_asset(conn, stored, tenant_id=variant.tenant_id, job_id=variant.job_id,
                                       job_variants_id=variant.job_variants_id, image_type="generated")
        _set_variant_column(conn, variant.job_variants_id, "img_asset_id", asset_id)

    return StageOutcome(
        write=write,
        metadata={"mode": generated.mode, "seed": generated.seed, "prompt": generated.prompt,
                  "width": generated.image.width, "height": generated.image.height, "latency_ms": latency},
        thumbnails=[Thumbnail("generated", generated.image, str(stored.path))],
        model=ctx.models.describe("image_generator"),
    )


# --- vlm_analyze ------------------------------------------------------------------------------


def vlm_analyze(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.vlm import AnalyzeInput, analyze

    variant = _variant(ctx)
    image = _variant_image(ctx, variant)
    brief = ensure_brief(ctx, variant.job_id)
    start = time.perf_counter()
    result = analyze(ctx.models.get("vlm"), AnalyzeInput(image=image, ad_copy=brief.ad_copy_eng or None,
                                                    overlay_text=brief.ad_copy_kor or None,
                                                    seed=ctx.settings.seed_base + variant.creation_order))
    latency = _ms(start)
    model = ctx.models.describe("vlm")
    response = result.to_dict()

    def write(conn: Connection) -> None:
        _upsert_vlm_trace(conn, variant, "analyze", model,
                          {"image_asset_id": variant.img_asset_id, "ad_copy_eng": brief.ad_copy_eng,
                           "overlay_text": brief.ad_copy_kor, "prompts": result.prompts},
                          response, latency)

    font = result.font
    return StageOutcome(
        write=write,
        metadata={"relevance": result.relevance, "valid": result.valid, "mismatch": result.mismatch,
                  "font_style": font.style, "font_name": font.name, "font_color": font.color_hex,
                  "unparsed": list(result.unparsed), "latency_ms": latency},
        model=model,
    )


def _upsert_vlm_trace(conn: Connection, variant: VariantRow, operation: str, model: str,
                      request: dict[str, Any], response: dict[str, Any], latency_ms: int) -> None:
    conn.execute(
        sa.text(
            """INSERT INTO vlm_traces (job_id, job_variants_id, operation_type, provider, model, request,
                                       response, latency_ms)
               VALUES (:job, :variant, :op, 'transformers', :model, CAST(:req AS jsonb), CAST(:resp AS jsonb), :ms)
               ON CONFLICT (job_variants_id, operation_type) DO UPDATE SET
                   model = EXCLUDED.model, request = EXCLUDED.request, response = EXCLUDED.response,
                   latency_ms = EXCLUDED.latency_ms, updated_at = now()"""
        ),
        {"job": variant.job_id, "variant": variant.job_variants_id, "op": operation, "model": model,
         "req": _json(request), "resp": _json(response), "ms": latency_ms},
    )


# --- yolo_detect ------------------------------------------------------------------------------


def yolo_detect(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.detect import detect

    variant = _variant(ctx)
    image = _variant_image(ctx, variant)
    s = ctx.settings
    start = time.perf_counter()
    [result] = detect(ctx.models.get("detector"), [image], forbidden_classes=s.forbidden_classes,
                      conf=s.detector_conf, iou=s.detector_iou)
    latency = _ms(start)
    mask = ctx.store.save_image(variant.tenant_id, "forbidden_mask", result.forbidden_mask)
    model = ctx.models.describe("detector")

    def write(conn: Connection) -> None:
        mask_id = replace_image_asset(conn, mask, tenant_id=variant.tenant_id, job_id=variant.job_id,
                                      job_variants_id=variant.job_variants_id, image_type="forbidden_mask")
        conn.execute(sa.text("DELETE FROM detections WHERE job_variants_id = :v"), {"v": variant.job_variants_id})
        for d in result.detections:
            x1, y1, x2, y2 = d.box_px
            conn.execute(
                sa.text(
                    """INSERT INTO detections (job_variants_id, job_id, image_asset_id, label, class_id, score,
                                               x1, y1, x2, y2, forbidden)
                       VALUES (:v, :j, :img, :label, :cls, :score, :x1, :y1, :x2, :y2, :forbidden)"""
                ),
                {"v": variant.job_variants_id, "j": variant.job_id, "img": variant.img_asset_id,
                 "label": d.label, "cls": d.class_id, "score": float(d.score),
                 "x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2), "forbidden": d.forbidden},
            )
        conn.execute(
            sa.text(
                """INSERT INTO detection_runs (job_variants_id, job_id, image_asset_id, model, forbidden_classes,
                                              detection_count, mask_asset_id, latency_ms)
                   VALUES (:v, :j, :img, :model, :classes, :n, :mask, :ms)
                   ON CONFLICT (job_variants_id) DO UPDATE SET image_asset_id = EXCLUDED.image_asset_id,
                       model = EXCLUDED.model, forbidden_classes = EXCLUDED.forbidden_classes,
                       detection_count = EXCLUDED.detection_count, mask_asset_id = EXCLUDED.mask_asset_id,
                       latency_ms = EXCLUDED.latency_ms, updated_at = now()"""
            ),
            {"v": variant.job_variants_id, "j": variant.job_id, "img": variant.img_asset_id, "model": model,
             "classes": list(s.forbidden_classes), "n": len(result.detections), "mask": mask_id, "ms": latency},
        )

    return StageOutcome(
        write=write,
        metadata={"detections": len(result.detections), "forbidden": len(result.forbidden),
                  "labels": sorted({d.label for d in result.detections}), "conf": s.detector_conf,
                  "latency_ms": latency},
        thumbnails=[Thumbnail("forbidden mask", result.forbidden_mask.convert("RGB"), str(mask.path))],
        model=model,
    )


def _load_detections(conn: Connection, variant: VariantRow, width: int, height: int) -> list[Detection]:
    ran = conn.execute(sa.text("SELECT 1 FROM detection_runs WHERE job_variants_id = :v"),
                       {"v": variant.job_variants_id}).first()
    if ran is None:
        raise StageInputError(f"variant {variant.job_variants_id} has no yolo_detect output yet")
    rows = conn.execute(
        sa.text("SELECT label, class_id, score, x1, y1, x2, y2, forbidden FROM detections "
                "WHERE job_variants_id = :v ORDER BY score DESC, detection_id"),
        {"v": variant.job_variants_id},
    ).all()
    return [
        Detection(label=r.label, class_id=int(r.class_id if r.class_id is not None else -1), score=float(r.score),
                  box_px=(r.x1, r.y1, r.x2, r.y2),
                  box=NormBox.from_px((r.x1, r.y1, r.x2, r.y2), width, height), forbidden=bool(r.forbidden))
        for r in rows
    ]


def _forbidden_mask(ctx: HandlerContext, conn: Connection, variant: VariantRow) -> np.ndarray | None:
    row = conn.execute(
        sa.text("SELECT a.path FROM detection_runs r JOIN image_assets a ON a.image_asset_id = r.mask_asset_id "
                "WHERE r.job_variants_id = :v"),
        {"v": variant.job_variants_id},
    ).first()
    if row is None:
        return None
    return np.asarray(open_image(ctx.store, row[0], f"forbidden mask of variant {variant.job_variants_id}")
                      .convert("L"))


# --- planner ----------------------------------------------------------------------------------


def planner(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.planner import draw_plan, plan_placements

    variant = _variant(ctx)
    image = _variant_image(ctx, variant)
    with ctx.engine.connect() as conn:
        detections = _load_detections(conn, variant, image.width, image.height)
        mask = _forbidden_mask(ctx, conn, variant)
    start = time.perf_counter()
    result = plan_placements(image.width, image.height, detections, mask)
    latency = _ms(start)
    viz = draw_plan(image, result, mask)
    stored = ctx.store.save_image(variant.tenant_id, "planner", viz)

    def write(conn: Connection) -> None:
        viz_id = replace_image_asset(conn, stored, tenant_id=variant.tenant_id, job_id=variant.job_id,
                                     job_variants_id=variant.job_variants_id, image_type="planner")
        conn.execute(
            sa.text(
                """INSERT INTO planner_proposals (job_variants_id, job_id, image_asset_id, layout,
                                                  visualization_asset_id, latency_ms)
                   VALUES (:v, :j, :img, CAST(:layout AS jsonb), :viz, :ms)
                   ON CONFLICT (job_variants_id) DO UPDATE SET image_asset_id = EXCLUDED.image_asset_id,
                       layout = EXCLUDED.layout, visualization_asset_id = EXCLUDED.visualization_asset_id,
                       latency_ms = EXCLUDED.latency_ms, updated_at = now()"""
            ),
            {"v": variant.job_variants_id, "j": variant.job_id, "img": variant.img_asset_id,
             "layout": _json(result.to_dict()), "viz": viz_id, "ms": latency},
        )

    best = result.proposals[0] if result.proposals else None
    return StageOutcome(
        write=write,
        metadata={"proposals": len(result.proposals), "feasible": result.feasible, "reason": result.reason,
                  "best_source": best.source if best else None, "best_box": best.box.as_list() if best else None,
                  "forbidden_regions": len(result.forbidden_boxes), "latency_ms": latency},
        thumbnails=[Thumbnail("plan", viz, str(stored.path))],
    )


# --- overlay ----------------------------------------------------------------------------------


def overlay(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.fonts import FontCoverageError
    from variant_pipeline.work.overlay import OverlayParams, render_overlay
    from variant_pipeline.work.planner import PlannerResult

    variant = _variant(ctx)
    image = _variant_image(ctx, variant)
    with ctx.engine.connect() as conn:
        plan_row = conn.execute(
            sa.text("SELECT proposal_id::text, layout FROM planner_proposals WHERE job_variants_id = :v"),
            {"v": variant.job_variants_id},
        ).first()
        font_row = conn.execute(
            sa.text("SELECT response -> 'font' FROM vlm_traces WHERE job_variants_id = :v AND operation_type = 'analyze'"),
            {"v": variant.job_variants_id},
        ).first()
    if plan_row is None:
        raise StageInputError(f"variant {variant.job_variants_id} has no planner output yet")
    plan = PlannerResult.from_dict(plan_row.layout)
    font_rec = _font_recommendation(font_row[0] if font_row else None)
    text = ensure_brief(ctx, variant.job_id, need=["ad_copy_kor"]).ad_copy_kor
    start = time.perf_counter()
    try:
        result = render_overlay(image, text, plan, font_rec, OverlayParams(font_path=ctx.settings.font_path))
    except (FontCoverageError, ValueError) as exc:  # the text, font or plan cannot be drawn: retrying will not help
        raise StageInputError(f"variant {variant.job_variants_id} cannot draw its overlay text {text!r}: {exc}") from exc
    latency = _ms(start)
    overlaid = ctx.store.save_image(variant.tenant_id, "overlaid", result.image)
    glyphs = ctx.store.save_image(variant.tenant_id, "glyph_mask",
                                  Image.fromarray(result.glyph_mask.astype(np.uint8) * 255, mode="L"))
    layout = result.to_dict()
    layout["glyph_mask_path"] = glyphs.relative_path

    def write(conn: Connection) -> None:
        overlaid_id = replace_image_asset(conn, overlaid, tenant_id=variant.tenant_id, job_id=variant.job_id,
                                          job_variants_id=variant.job_variants_id, image_type="overlaid")
        replace_image_asset(conn, glyphs, tenant_id=variant.tenant_id, job_id=variant.job_id,
                            job_variants_id=variant.job_variants_id, image_type="glyph_mask")
        box, text_box = result.box, result.text_box
        conn.execute(
            sa.text(
                """INSERT INTO overlay_layouts (job_variants_id, job_id, proposal_id, x_ratio, y_ratio, width_ratio,
                       height_ratio, text_x_ratio, text_y_ratio, text_width_ratio, text_height_ratio, layout,
                       overlaid_asset_id, latency_ms)
                   VALUES (:v, :j, :p, :x, :y, :w, :h, :tx, :ty, :tw, :th, CAST(:layout AS jsonb), :asset, :ms)
                   ON CONFLICT (job_variants_id) DO UPDATE SET proposal_id = EXCLUDED.proposal_id,
                       x_ratio = EXCLUDED.x_ratio, y_ratio = EXCLUDED.y_ratio, width_ratio = EXCLUDED.width_ratio,
                       height_ratio = EXCLUDED.height_ratio, text_x_ratio = EXCLUDED.text_x_ratio,
                       text_y_ratio = EXCLUDED.text_y_ratio, text_width_ratio = EXCLUDED.text_width_ratio,
                       text_height_ratio = EXCLUDED.text_height_ratio, layout = EXCLUDED.layout,
                       overlaid_asset_id = EXCLUDED.overlaid_asset_id, latency_ms = EXCLUDED.latency_ms,
                       updated_at = now()"""
            ),
            {"v": variant.job_variants_id, "j": variant.job_id, "p": plan_row.proposal_id,
             "x": box.x, "y": box.y, "w": box.w, "h": box.h,
             "tx": text_box.x, "ty": text_box.y, "tw": text_box.w, "th": text_box.h,
             "layout": _json(layout), "asset": overlaid_id, "ms": latency},
        )
        _set_variant_column(conn, variant.job_variants_id, "overlaid_img_asset_id", overlaid_id)

    return StageOutcome(
        write=write,
        metadata={"text": text, "font": layout["font_name"], "font_size_px": result.font_size_px,
                  "color": result.color_hex, "color_source": result.color_source, "fits": result.fits,
                  "fit_reason": result.fit_reason, "box": result.box.as_list(),
                  "text_box": result.text_box.as_list(), "selection": result.selection, "latency_ms": latency},
        thumbnails=[Thumbnail("overlaid", result.image, str(overlaid.path))],
    )


def _font_recommendation(data: dict[str, Any] | None) -> FontRecommendation | None:
    if not data:
        return None
    return FontRecommendation(
        style=data.get("style"), name=data.get("name"), size_category=data.get("size_category"),
        color_hex=data.get("color_hex"), reasoning=data.get("reasoning"),
    )


def _overlay_record(ctx: HandlerContext, variant: VariantRow) -> tuple[str, dict[str, Any], Image.Image]:
    with ctx.engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT overlay_id::text, layout FROM overlay_layouts WHERE job_variants_id = :v"),
            {"v": variant.job_variants_id},
        ).first()
        if row is None:
            raise StageInputError(f"variant {variant.job_variants_id} has no overlay output yet")
        what = f"overlaid image of variant {variant.job_variants_id}"
        path = asset_path(conn, variant.overlaid_img_asset_id, what)
    overlaid = open_image(ctx.store, path, f"{what} (image asset {variant.overlaid_img_asset_id})")
    return row.overlay_id, row.layout, overlaid.convert("RGB")


def _upsert_evaluation(conn: Connection, variant: VariantRow, overlay_id: str, kind: str,
                       metrics: dict[str, Any]) -> None:
    conn.execute(
        sa.text(
            """INSERT INTO evaluations (job_id, job_variants_id, overlay_id, evaluation_type, metrics)
               VALUES (:j, :v, :o, :t, CAST(:m AS jsonb))
               ON CONFLICT (job_variants_id, evaluation_type) DO UPDATE SET overlay_id = EXCLUDED.overlay_id,
                   metrics = EXCLUDED.metrics, updated_at = now()"""
        ),
        {"j": variant.job_id, "v": variant.job_variants_id, "o": overlay_id, "t": kind, "m": _json(metrics)},
    )


def _evaluation_outcome(variant: VariantRow, overlay_id: str, kind: str, metrics: dict[str, Any],
                        latency_ms: int, summary: dict[str, Any], model: str | None = None) -> StageOutcome:
    """The outcome of an evaluation stage: one ``evaluations`` row of ``kind`` for the variant."""
    record = {**metrics, "latency_ms": latency_ms}

    def write(conn: Connection) -> None:
        _upsert_evaluation(conn, variant, overlay_id, kind, record)

    return StageOutcome(write=write, metadata={**summary, "latency_ms": latency_ms}, model=model)


# --- vlm_judge --------------------------------------------------------------------------------


def vlm_judge(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.vlm import Brief, JudgeInput, judge_batch

    variant = _variant(ctx)
    overlay_id, layout, overlaid = _overlay_record(ctx, variant)
    brief = ensure_brief(ctx, variant.job_id)
    start = time.perf_counter()
    [verdict] = judge_batch(ctx.models.get("vlm"), [JudgeInput(
        image=overlaid,
        brief=Brief(overlay_text=layout.get("text") or brief.ad_copy_kor, ad_copy=brief.ad_copy_eng or None,
                    description=brief.desc_eng or None),
        seed=ctx.settings.seed_base + variant.creation_order,
    )])
    latency = _ms(start)
    model = ctx.models.describe("vlm")

    def write(conn: Connection) -> None:
        _upsert_vlm_trace(conn, variant, "judge", model,
                          {"overlay_id": overlay_id, "overlaid_asset_id": variant.overlaid_img_asset_id,
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


# --- ocr_eval ---------------------------------------------------------------------------------


def ocr_eval(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.ocr import evaluate_ocr

    variant = _variant(ctx)
    overlay_id, layout, overlaid = _overlay_record(ctx, variant)
    start = time.perf_counter()
    metrics = evaluate_ocr(ctx.models.get("ocr"), overlaid, layout["text_bbox_px"], layout["text"],
                           font_size_px=layout.get("font_size"))
    return _evaluation_outcome(
        variant, overlay_id, "ocr", metrics.to_dict(), _ms(start),
        {"ocr_accuracy": metrics.ocr_accuracy, "recognized_text": metrics.recognized_text,
         "original_text": metrics.original_text, "ocr_confidence": metrics.ocr_confidence},
        model=ctx.models.describe("ocr"),
    )


# --- readability_eval -------------------------------------------------------------------------


def readability_eval(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.readability import evaluate_readability

    variant = _variant(ctx)
    overlay_id, layout, _overlaid = _overlay_record(ctx, variant)
    background = _variant_image(ctx, variant)  # the pixels under the text, before it was drawn
    mask_path = layout.get("glyph_mask_path")
    if not mask_path:
        raise StageInputError(f"overlay of variant {variant.job_variants_id} recorded no glyph mask")
    glyph_mask = np.asarray(
        open_image(ctx.store, mask_path, f"glyph mask of variant {variant.job_variants_id}").convert("L")
    ) > 127
    start = time.perf_counter()
    metrics = evaluate_readability(background, glyph_mask, tuple(layout["text_bbox_px"]),
                                   layout["text_color_rgb"], layout["font_size"], bold=bool(layout.get("bold")))
    return _evaluation_outcome(
        variant, overlay_id, "readability", metrics.to_dict(), _ms(start),
        {"contrast_ratio": metrics.contrast_ratio, "contrast_ratio_p10": metrics.contrast_ratio_p10,
         "wcag_aa": metrics.wcag_aa_compliant, "wcag_aaa": metrics.wcag_aaa_compliant,
         "readability_score": metrics.readability_score},
    )


# --- iou_eval ---------------------------------------------------------------------------------


def iou_eval(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.iou import evaluate_iou

    variant = _variant(ctx)
    overlay_id, layout, overlaid = _overlay_record(ctx, variant)
    with ctx.engine.connect() as conn:
        detections = _load_detections(conn, variant, overlaid.width, overlaid.height)
    start = time.perf_counter()
    metrics = evaluate_iou(NormBox(*layout["box"]), NormBox(*layout["text_box"]), detections)
    return _evaluation_outcome(
        variant, overlay_id, "iou", metrics.to_dict(), _ms(start),
        {"max_iou_text": metrics.max_iou_text, "max_iou_placement": metrics.max_iou_placement,
         "overlap_detected": metrics.overlap_detected, "forbidden_detections": metrics.detection_count},
    )
