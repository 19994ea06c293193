"""Every row a stage handler writes, one named function per output table.

Each runs inside the transaction that also marks the stage done (the handlers' ``StageOutcome.write``).
Outputs are unique per (variant or job, stage): writing again replaces the previous answer.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from variant_pipeline.data.stage_inputs import VariantRow
from variant_pipeline.data.storage import StoredImage


def jsonable(value: Any) -> Any:
    """Plain JSON types only (numpy scalars and tuples included), for jsonb columns and metadata."""
    if isinstance(value, str):
        # PostgreSQL text and jsonb cannot hold NUL; raw model answers sometimes contain it.
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def _json(value: Any) -> str:
    return json.dumps(jsonable(value), ensure_ascii=False)


class DetectionRecord(Protocol):
    """What a ``detections`` row holds of one detection (the stage work's ``Detection`` is one)."""

    label: str
    class_id: int
    score: float
    box_px: tuple[float, float, float, float]
    forbidden: bool


# --- Images -----------------------------------------------------------------------------------


def replace_image_asset(conn: Connection, stored: StoredImage, *, tenant_id: str, job_id: str,
                        job_variants_id: str | None, image_type: str) -> str:
    """Insert the asset row for ``stored``, dropping this partition's previous one of the same type
    (re-running a stage replaces its image, it does not add a second)."""
    if job_variants_id is not None:
        conn.execute(
            sa.text("DELETE FROM image_assets WHERE job_variants_id = :v AND image_type = :t"),
            {"v": job_variants_id, "t": image_type},
        )
    return str(
        conn.execute(
            sa.text(
                """INSERT INTO image_assets (tenant_id, job_id, job_variants_id, image_type, path,
                                             width, height, sha256)
                   VALUES (:tenant, :job, :variant, :type, :path, :w, :h, :sha)
                   RETURNING image_asset_id::text"""
            ),
            {
                "tenant": tenant_id, "job": job_id, "variant": job_variants_id, "type": image_type,
                "path": stored.relative_path, "w": stored.width, "h": stored.height, "sha": stored.sha256,
            },
        ).scalar_one()
    )


def replace_variant_image(conn: Connection, variant: VariantRow, stored: StoredImage, image_type: str) -> str:
    """``replace_image_asset`` for one of the variant's own images."""
    return replace_image_asset(conn, stored, tenant_id=variant.tenant_id, job_id=variant.job_id,
                               job_variants_id=variant.job_variants_id, image_type=image_type)


_VARIANT_IMAGE_COLUMNS = ("img_asset_id", "overlaid_img_asset_id")


def set_variant_image(conn: Connection, variant_id: str, column: str, image_asset_id: str) -> None:
    """Point the variant row at its generated or overlaid image."""
    if column not in _VARIANT_IMAGE_COLUMNS:
        raise ValueError(f"{column!r} is not one of {_VARIANT_IMAGE_COLUMNS}")
    conn.execute(sa.text(f"UPDATE jobs_variants SET {column} = :v WHERE job_variants_id = :id"),
                 {"v": image_asset_id, "id": variant_id})


# --- Variant stages ---------------------------------------------------------------------------


def upsert_vlm_trace(conn: Connection, variant: VariantRow, operation: str, model: str,
                     request: dict[str, Any], response: dict[str, Any], latency_ms: int) -> None:
    """vlm_analyze (``analyze``) and vlm_judge (``judge``): one trace per (variant, operation)."""
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


def replace_detections(conn: Connection, variant: VariantRow, detections: list[DetectionRecord], *, model: str,
                       forbidden_classes: list[str], mask_asset_id: str, latency_ms: int) -> None:
    """yolo_detect: the variant's ``detections`` rows replaced, and its one ``detection_runs`` row."""
    conn.execute(sa.text("DELETE FROM detections WHERE job_variants_id = :v"), {"v": variant.job_variants_id})
    for d in detections:
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
         "classes": forbidden_classes, "n": len(detections), "mask": mask_asset_id, "ms": latency_ms},
    )


def upsert_planner_proposal(conn: Connection, variant: VariantRow, layout: dict[str, Any],
                            visualization_asset_id: str, latency_ms: int) -> None:
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
         "layout": _json(layout), "viz": visualization_asset_id, "ms": latency_ms},
    )


def upsert_overlay_layout(conn: Connection, variant: VariantRow, *, proposal_id: str,
                          box: tuple[float, float, float, float], text_box: tuple[float, float, float, float],
                          layout: dict[str, Any], overlaid_asset_id: str, latency_ms: int) -> None:
    """overlay: the placement and text boxes (x, y, w, h ratios) and the full layout."""
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
        {"v": variant.job_variants_id, "j": variant.job_id, "p": proposal_id,
         "x": box[0], "y": box[1], "w": box[2], "h": box[3],
         "tx": text_box[0], "ty": text_box[1], "tw": text_box[2], "th": text_box[3],
         "layout": _json(layout), "asset": overlaid_asset_id, "ms": latency_ms},
    )


def upsert_evaluation(conn: Connection, variant: VariantRow, overlay_id: str, kind: str,
                      metrics: dict[str, Any]) -> None:
    """ocr_eval, readability_eval, iou_eval: one ``evaluations`` row per (variant, kind)."""
    conn.execute(
        sa.text(
            """INSERT INTO evaluations (job_id, job_variants_id, overlay_id, evaluation_type, metrics)
               VALUES (:j, :v, :o, :t, CAST(:m AS jsonb))
               ON CONFLICT (job_variants_id, evaluation_type) DO UPDATE SET overlay_id = EXCLUDED.overlay_id,
                   metrics = EXCLUDED.metrics, updated_at = now()"""
        ),
        {"j": variant.job_id, "v": variant.job_variants_id, "o": overlay_id, "t": kind, "m": _json(metrics)},
    )


# --- Job texts and job stages -----------------------------------------------------------------


def update_brief_texts(conn: Connection, job_id: str, values: dict[str, str | None]) -> None:
    """The brief's texts on ``job_inputs`` (desc_eng, ad_copy_eng, ad_copy_kor)."""
    conn.execute(
        sa.text(
            "UPDATE job_inputs SET desc_eng = :desc_eng, ad_copy_eng = :ad_copy_eng, "
            "ad_copy_kor = :ad_copy_kor WHERE job_id = :job"
        ),
        {**values, "job": job_id},
    )


def upsert_llm_trace(conn: Connection, job_id: str, operation: str, trace: dict) -> str:
    """One current trace per (job, operation): re-running replaces it."""
    return str(
        conn.execute(
            sa.text(
                """INSERT INTO llm_traces (job_id, operation_type, provider, model, request, response,
                                           prompt_tokens, completion_tokens, total_tokens, latency_ms)
                   VALUES (:job, :op, :provider, :model, CAST(:request AS jsonb), CAST(:response AS jsonb),
                           :pt, :ct, :tt, :latency)
                   ON CONFLICT (job_id, operation_type) DO UPDATE SET
                       provider = EXCLUDED.provider, model = EXCLUDED.model, request = EXCLUDED.request,
                       response = EXCLUDED.response, prompt_tokens = EXCLUDED.prompt_tokens,
                       completion_tokens = EXCLUDED.completion_tokens, total_tokens = EXCLUDED.total_tokens,
                       latency_ms = EXCLUDED.latency_ms, updated_at = now()
                   RETURNING llm_trace_id::text"""
            ),
            {
                "job": job_id, "op": operation, "provider": trace.get("provider"), "model": trace.get("model"),
                "request": _json(trace.get("request", {})),
                "response": _json(trace.get("response", {})),
                "pt": trace.get("prompt_tokens"), "ct": trace.get("completion_tokens"),
                "tt": trace.get("total_tokens"),
                "latency": None if trace.get("latency_ms") is None else int(trace["latency_ms"]),
            },
        ).scalar_one()
    )


def upsert_ad_copy(conn: Connection, job_id: str, kind: str, text: str, llm_trace_id: str | None) -> None:
    conn.execute(
        sa.text(
            """INSERT INTO ad_copies (job_id, kind, text, llm_trace_id) VALUES (:job, :kind, :text, :trace)
               ON CONFLICT (job_id, kind) DO UPDATE SET text = EXCLUDED.text,
                   llm_trace_id = EXCLUDED.llm_trace_id, updated_at = now()"""
        ),
        {"job": job_id, "kind": kind, "text": text, "trace": llm_trace_id},
    )


def upsert_instagram_feed(conn: Connection, job_id: str, *, llm_trace_id: str, ad_copy_kor: str, ad_copy_eng: str,
                          product_description: str, instagram_ad_copy: str, hashtags: list[str], model: str,
                          temperature: float, max_tokens: int, latency_ms: int) -> None:
    conn.execute(
        sa.text(
            """INSERT INTO instagram_feeds (job_id, llm_trace_id, ad_copy_kor, ad_copy_eng, product_description,
                                            instagram_ad_copy, hashtags, model, temperature, max_tokens, latency_ms)
               VALUES (:j, :t, :kor, :eng, :desc, :copy, :tags, :model, :temp, :maxt, :ms)
               ON CONFLICT (job_id) DO UPDATE SET llm_trace_id = EXCLUDED.llm_trace_id,
                   ad_copy_kor = EXCLUDED.ad_copy_kor, ad_copy_eng = EXCLUDED.ad_copy_eng,
                   product_description = EXCLUDED.product_description,
                   instagram_ad_copy = EXCLUDED.instagram_ad_copy, hashtags = EXCLUDED.hashtags,
                   model = EXCLUDED.model, temperature = EXCLUDED.temperature,
                   max_tokens = EXCLUDED.max_tokens, latency_ms = EXCLUDED.latency_ms, updated_at = now()"""
        ),
        {"j": job_id, "t": llm_trace_id, "kor": ad_copy_kor, "eng": ad_copy_eng, "desc": product_description,
         "copy": instagram_ad_copy, "tags": hashtags, "model": model, "temp": temperature,
         "maxt": max_tokens, "ms": latency_ms},
    )
