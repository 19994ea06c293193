"""What every stage handler shares: its context, its outcome, and the reads and writes of rows.

A handler does the heavy work outside any transaction and returns a ``StageOutcome`` whose
``write`` runs inside the one short transaction that also marks the stage done, so a stage's
outputs and its ``(step, done)`` commit together or not at all.
"""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Connection, Engine

from variant_pipeline.config import Settings
from variant_pipeline.data.storage import AssetStore, StoredImage
from variant_pipeline.validation import (
    MAX_AD_COPY_KOR_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_PROMPT_CHARS,
    InputError,
    check_text,
    load_image_file,
)


class StageInputError(ValueError):
    """A stage cannot run because an input is missing or unusable (the message says which)."""


class Models(Protocol):
    """Lazy handles to the shared models, by model family name (``models.registry``); each
    loads on first use, once per process."""

    def get(self, family: str) -> Any: ...
    def describe(self, family: str) -> str: ...


@dataclass
class HandlerContext:
    engine: Engine
    store: AssetStore
    settings: Settings
    models: Models
    origin: str  # recorded on every outbox event this stage's writes cause
    partition_key: str  # job_variants_id or job_id
    log: Callable[[str], None] = print
    run_id: str | None = None  # the Dagster run; None outside Dagster (the origin names the caller)
    # True for automatic retries: attempts count on from the last one instead of starting at 1.
    continues_attempts: bool = False


@dataclass
class Thumbnail:
    label: str
    image: Image.Image
    path: str | None = None  # the full-size file, for a path link


@dataclass
class StageOutcome:
    write: Callable[[Connection], None]
    metadata: dict[str, Any] = field(default_factory=dict)
    thumbnails: list[Thumbnail] = field(default_factory=list)
    model: str | None = None  # what model (path or id) did the work


# --- Rows -------------------------------------------------------------------------------------


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

    The checks are those of a submitted photo (validation.load_image_file): size limits from the
    header before any pixel is decoded, then a full decode. Rows written by other systems reach
    the stages without the CLI's checks, so every image a stage reads goes through them here.
    """
    try:
        path = store.path_for(relative_path)
    except InputError as exc:
        raise StageInputError(f"{what}: {exc}") from None
    if not path.exists():
        raise StageInputError(f"{what} is missing: file {path} not found")
    try:
        _checked, image = load_image_file(path)
    except InputError as exc:
        raise StageInputError(f"{what}: {exc}") from None
    except Exception as exc:  # PIL raises many types for broken files (ultralytics' patch adds ImportError)
        raise StageInputError(
            f"{what} file {relative_path} is not a readable image: {type(exc).__name__}: {exc}"
        ) from None
    return image


def replace_image_asset(
    conn: Connection,
    stored: StoredImage,
    *,
    tenant_id: str,
    job_id: str,
    job_variants_id: str | None,
    image_type: str,
) -> str:
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


def thumbnail_markdown(image: Image.Image, label: str, max_px: int = 192) -> str:
    """A small inline image for the Dagster UI (metadata lives in the event log: keep it small)."""
    thumb = image.convert("RGB")
    thumb.thumbnail((max_px, max_px))
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=80)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"![{label}](data:image/jpeg;base64,{data})"


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
