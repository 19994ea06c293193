"""Every read a stage handler makes: its partition's row, the job's inputs, stored images and the
outputs of earlier stages. Each raises ``StageInputError`` naming what is missing or unusable.

A stage reads here (over ``data/stage_inputs.py``'s queries) and writes through
``data/stage_outputs.py``; the stage modules hold no SQL.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from variant_pipeline.data import stage_inputs
from variant_pipeline.data.engine import Connection
from variant_pipeline.data.stage_inputs import JobInputsRow, VariantRow
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


def _uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise StageInputError(f"{what} {value!r} is not a UUID") from None


def load_variant(conn: Connection, job_variants_id: str) -> VariantRow:
    row = stage_inputs.variant_row(conn, _uuid(job_variants_id, "variant id"))
    if row is None:
        raise StageInputError(f"variant {job_variants_id} does not exist in jobs_variants")
    return row


def variant_of(ctx: HandlerContext) -> VariantRow:
    """The row of the variant partition this stage runs for."""
    with ctx.engine.connect() as conn:
        return load_variant(conn, ctx.partition_key)


def load_job_inputs(conn: Connection, job_id: str) -> JobInputsRow:
    inputs = stage_inputs.job_inputs_row(conn, _uuid(job_id, "job id"))
    if inputs is None:
        raise StageInputError(f"job {job_id} does not exist")
    if inputs.desc_kor is None:
        raise StageInputError(f"job {job_id} has no job_inputs row (no description)")
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
    path = stage_inputs.image_path(conn, image_asset_id)
    if path is None:
        raise StageInputError(f"no {what}: image asset {image_asset_id} does not exist")
    return path


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


def _missing_output(variant: VariantRow, stage: str) -> StageInputError:
    return StageInputError(f"variant {variant.job_variants_id} has no {stage} output yet")


def detections_of(ctx: HandlerContext, variant: VariantRow, width: int, height: int) -> list[Detection]:
    """yolo_detect's detections, best first, with boxes normalised to ``width`` x ``height``."""
    with ctx.engine.connect() as conn:
        if not stage_inputs.has_detection_run(conn, variant.job_variants_id):
            raise _missing_output(variant, "yolo_detect")
        rows = stage_inputs.detections(conn, variant.job_variants_id)
    return [
        Detection(label=r.label, class_id=int(r.class_id if r.class_id is not None else -1), score=float(r.score),
                  box_px=(r.x1, r.y1, r.x2, r.y2),
                  box=NormBox.from_px((r.x1, r.y1, r.x2, r.y2), width, height), forbidden=bool(r.forbidden))
        for r in rows
    ]


def forbidden_mask_of(ctx: HandlerContext, variant: VariantRow) -> np.ndarray | None:
    """yolo_detect's mask of forbidden regions (grey levels), None when it recorded none."""
    with ctx.engine.connect() as conn:
        path = stage_inputs.forbidden_mask_path(conn, variant.job_variants_id)
    if path is None:
        return None
    return np.asarray(open_image(ctx.store, path, f"forbidden mask of variant {variant.job_variants_id}")
                      .convert("L"))


@dataclass(frozen=True)
class PlanRecord:
    proposal_id: str
    layout: dict[str, Any]


def plan_of(ctx: HandlerContext, variant: VariantRow) -> PlanRecord:
    """planner's proposal row."""
    with ctx.engine.connect() as conn:
        row = stage_inputs.planner_proposal(conn, variant.job_variants_id)
    if row is None:
        raise _missing_output(variant, "planner")
    return PlanRecord(row.id, row.layout)


def font_recommendation_of(ctx: HandlerContext, variant: VariantRow) -> FontRecommendation | None:
    """vlm_analyze's font recommendation, None when it made none."""
    with ctx.engine.connect() as conn:
        data = stage_inputs.font_recommendation(conn, variant.job_variants_id)
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
        row = stage_inputs.overlay_layout(conn, variant.job_variants_id)
        if row is None:
            raise _missing_output(variant, "overlay")
        what = f"overlaid image of variant {variant.job_variants_id}"
        path = asset_path(conn, variant.overlaid_img_asset_id, what)
    overlaid = open_image(ctx.store, path, f"{what} (image asset {variant.overlaid_img_asset_id})")
    return OverlayRecord(row.id, row.layout, overlaid.convert("RGB"))


def finished_variant_images(ctx: HandlerContext, job_id: str) -> list[tuple[int, str]]:
    """(creation_order, overlaid image path) of the job's variants that finished every stage."""
    with ctx.engine.connect() as conn:
        return stage_inputs.finished_variant_images(conn, job_id)


def translated_ad_copy(ctx: HandlerContext, job_id: str) -> str | None:
    """ad_copy_gen_kor's Korean ad copy, None before that stage ran."""
    with ctx.engine.connect() as conn:
        return stage_inputs.translated_ad_copy(conn, job_id)
