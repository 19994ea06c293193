"""Every read a stage handler makes: its partition's row, the job's inputs, stored images and the
outputs of earlier stages. Each raises ``StageInputError`` naming what is missing or unusable.

A stage reads here and writes through ``handlers/outputs.py``; the stage modules hold no SQL.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Connection

from variant_pipeline import stages as stage_graph
from variant_pipeline.data.storage import AssetMissing, AssetStore
from variant_pipeline.handlers.base import HandlerContext
from variant_pipeline.state.attempts import StageInputError
from variant_pipeline.validation import (
    MAX_AD_COPY_KOR_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_PROMPT_CHARS,
    InputError,
    check_text,
    load_image_bytes,
)
from variant_pipeline.work.types import Detection, FontRecommendation, NormBox

# --- The partition's row and the job's inputs -------------------------------------------------


@dataclass(frozen=True)
class VariantRow:
    job_variants_id: str
    job_id: str
    tenant_id: str
    creation_order: int
    img_asset_id: str | None
    overlaid_img_asset_id: str | None
    current_step: str
    status: str


@dataclass(frozen=True)
class JobInputsRow:
    job_id: str
    tenant_id: str
    expected_variants: int
    desc_kor: str
    desc_eng: str | None
    ad_copy_eng: str | None
    ad_copy_kor: str | None
    prompt: str | None
    product_image_asset_id: str | None


def _uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise StageInputError(f"{what} {value!r} is not a UUID") from None


def load_variant(conn: Connection, job_variants_id: str) -> VariantRow:
    row = conn.execute(
        sa.text(
            """SELECT v.job_variants_id::text, v.job_id::text, j.tenant_id, v.creation_order,
                      v.img_asset_id::text, v.overlaid_img_asset_id::text, v.current_step, v.status
                 FROM jobs_variants v JOIN jobs j USING (job_id)
                WHERE v.job_variants_id = :id"""
        ),
        {"id": _uuid(job_variants_id, "variant id")},
    ).first()
    if row is None:
        raise StageInputError(f"variant {job_variants_id} does not exist in jobs_variants")
    return VariantRow(*row)


def variant_of(ctx: HandlerContext) -> VariantRow:
    """The row of the variant partition this stage runs for."""
    with ctx.engine.connect() as conn:
        return load_variant(conn, ctx.partition_key)


def load_job_inputs(conn: Connection, job_id: str) -> JobInputsRow:
    row = conn.execute(
        sa.text(
            """SELECT j.job_id::text, j.tenant_id, j.expected_variants, i.desc_kor, i.desc_eng,
                      i.ad_copy_eng, i.ad_copy_kor, i.prompt, i.product_image_asset_id::text
                 FROM jobs j LEFT JOIN job_inputs i USING (job_id)
                WHERE j.job_id = :id"""
        ),
        {"id": _uuid(job_id, "job id")},
    ).first()
    if row is None:
        raise StageInputError(f"job {job_id} does not exist")
    if row.desc_kor is None:
        raise StageInputError(f"job {job_id} has no job_inputs row (no description)")
    inputs = JobInputsRow(*row)
    _check_job_texts(inputs)
    return inputs


# The texts a person supplies, with the CLI's limits (the text model writes only the others, and
# ad_copy_kor within them). Rows inserted directly skip the CLI, so every stage that reads the
# inputs applies the same limits, and a job whose copy cannot be drawn fails at its first stage.
_JOB_TEXT_LIMITS = (
    ("desc_kor", "description", MAX_DESCRIPTION_CHARS),
    ("ad_copy_kor", "Korean ad copy", MAX_AD_COPY_KOR_CHARS),
    ("prompt", "prompt", MAX_PROMPT_CHARS),
)


def _check_job_texts(inputs: JobInputsRow) -> None:
    for column, what, limit in _JOB_TEXT_LIMITS:
        value = getattr(inputs, column)
        if value is None or not value.strip():
            continue  # absent: the brief writes it when a stage needs it
        try:
            check_text(value, what, limit)
        except InputError as exc:
            raise StageInputError(f"job {inputs.job_id}: {exc} (job_inputs.{column})") from None


# --- Stored images ----------------------------------------------------------------------------


def asset_path(conn: Connection, image_asset_id: str | None, what: str) -> str:
    if image_asset_id is None:
        raise StageInputError(f"no {what}: its image asset id is not set")
    row = conn.execute(
        sa.text("SELECT path FROM image_assets WHERE image_asset_id = :id"), {"id": image_asset_id}
    ).first()
    if row is None:
        raise StageInputError(f"no {what}: image asset {image_asset_id} does not exist")
    return str(row[0])


def open_image(store: AssetStore, relative_path: str, what: str) -> Image.Image:
    """Load a stored image fully, turning every way it can be broken into one clear error.

    The checks are those of a submitted photo (validation.load_image_bytes): size limits from the
    header before any pixel is decoded, then a full decode. Rows written by other systems reach
    the stages without the CLI's checks, so every image a stage reads goes through them here.
    A missing file or a broken image is the input's fault (no retry); a store that cannot be
    reached raises ``StorageError`` (transient: the attempt is retried).
    """
    try:
        data = store.read_bytes(relative_path)
    except InputError as exc:
        raise StageInputError(f"{what}: {exc}") from None
    except AssetMissing:
        raise StageInputError(f"{what} is missing: file {store.uri_for(relative_path)} not found") from None
    try:
        _checked, image = load_image_bytes(data, store.uri_for(relative_path))
    except InputError as exc:
        raise StageInputError(f"{what}: {exc}") from None
    except Exception as exc:  # PIL raises many types for broken files (ultralytics' patch adds ImportError)
        raise StageInputError(
            f"{what} file {relative_path} is not a readable image: {type(exc).__name__}: {exc}"
        ) from None
    return image


def product_image(ctx: HandlerContext, inputs: JobInputsRow) -> Image.Image | None:
    """The job's product photo, or None when the job was submitted without one."""
    if not inputs.product_image_asset_id:
        return None
    what = f"product photo of job {inputs.job_id}"
    with ctx.engine.connect() as conn:
        path = asset_path(conn, inputs.product_image_asset_id, what)
    return open_image(ctx.store, path, f"{what} (image asset {inputs.product_image_asset_id})")


def variant_image(ctx: HandlerContext, variant: VariantRow) -> Image.Image:
    """The variant's generated image (img_gen's output), as RGB."""
    what = f"generated image of variant {variant.job_variants_id}"
    with ctx.engine.connect() as conn:
        path = asset_path(conn, variant.img_asset_id, what)
    return open_image(ctx.store, path, f"{what} (image asset {variant.img_asset_id})").convert("RGB")


# --- Outputs of earlier stages ----------------------------------------------------------------


def _stage_output(conn: Connection, variant: VariantRow, stage: str, select: str) -> sa.Row:
    """The variant's output row of ``stage`` (``select`` binds ``:v``); missing is bad input."""
    row = conn.execute(sa.text(select), {"v": variant.job_variants_id}).first()
    if row is None:
        raise StageInputError(f"variant {variant.job_variants_id} has no {stage} output yet")
    return row


def detections_of(ctx: HandlerContext, variant: VariantRow, width: int, height: int) -> list[Detection]:
    """yolo_detect's detections, best first, with boxes normalised to ``width`` x ``height``."""
    with ctx.engine.connect() as conn:
        _stage_output(conn, variant, "yolo_detect", "SELECT 1 FROM detection_runs WHERE job_variants_id = :v")
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


def forbidden_mask_of(ctx: HandlerContext, variant: VariantRow) -> np.ndarray | None:
    """yolo_detect's mask of forbidden regions (grey levels), None when it recorded none."""
    with ctx.engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT a.path FROM detection_runs r JOIN image_assets a ON a.image_asset_id = r.mask_asset_id "
                    "WHERE r.job_variants_id = :v"),
            {"v": variant.job_variants_id},
        ).first()
    if row is None:
        return None
    return np.asarray(open_image(ctx.store, row[0], f"forbidden mask of variant {variant.job_variants_id}")
                      .convert("L"))


@dataclass(frozen=True)
class PlanRecord:
    proposal_id: str
    layout: dict[str, Any]


def plan_of(ctx: HandlerContext, variant: VariantRow) -> PlanRecord:
    """planner's proposal row."""
    with ctx.engine.connect() as conn:
        row = _stage_output(conn, variant, "planner",
                            "SELECT proposal_id::text, layout FROM planner_proposals WHERE job_variants_id = :v")
    return PlanRecord(row.proposal_id, row.layout)


def font_recommendation_of(ctx: HandlerContext, variant: VariantRow) -> FontRecommendation | None:
    """vlm_analyze's font recommendation, None when it made none."""
    with ctx.engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT response -> 'font' FROM vlm_traces WHERE job_variants_id = :v AND operation_type = 'analyze'"),
            {"v": variant.job_variants_id},
        ).first()
    data = row[0] if row else None
    if not data:
        return None
    return FontRecommendation(
        style=data.get("style"), name=data.get("name"), size_category=data.get("size_category"),
        color_hex=data.get("color_hex"), reasoning=data.get("reasoning"),
    )


@dataclass(frozen=True)
class OverlayRecord:
    overlay_id: str
    layout: dict[str, Any]
    image: Image.Image  # the overlaid image, RGB


def overlay_of(ctx: HandlerContext, variant: VariantRow) -> OverlayRecord:
    """overlay's layout row and the overlaid image."""
    with ctx.engine.connect() as conn:
        row = _stage_output(conn, variant, "overlay",
                            "SELECT overlay_id::text, layout FROM overlay_layouts WHERE job_variants_id = :v")
        what = f"overlaid image of variant {variant.job_variants_id}"
        path = asset_path(conn, variant.overlaid_img_asset_id, what)
    overlaid = open_image(ctx.store, path, f"{what} (image asset {variant.overlaid_img_asset_id})")
    return OverlayRecord(row.overlay_id, row.layout, overlaid.convert("RGB"))


def finished_variant_images(ctx: HandlerContext, job_id: str) -> list[tuple[int, str]]:
    """(creation_order, overlaid image path) of the job's variants that finished every stage."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                """SELECT v.creation_order, a.path FROM jobs_variants v
                     JOIN image_assets a ON a.image_asset_id = v.overlaid_img_asset_id
                    WHERE v.job_id = :j AND v.current_step = :last AND v.status = 'done'
                    ORDER BY v.creation_order"""
            ),
            {"j": job_id, "last": stage_graph.LAST_VARIANT_STAGE},
        ).all()
    return [(r[0], r[1]) for r in rows]


def translated_ad_copy(ctx: HandlerContext, job_id: str) -> str | None:
    """ad_copy_gen_kor's Korean ad copy, None before that stage ran."""
    with ctx.engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT text FROM ad_copies WHERE job_id = :j AND kind = 'eng_to_kor'"), {"j": job_id}
        ).scalar()
