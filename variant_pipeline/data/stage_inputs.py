"""Every row a stage reads: its partition's row, the job's inputs, image keys and the outputs of
earlier stages. Each returns None (or an empty list) where the row is missing: the handlers say
what that means for the stage (``handlers/rows.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from variant_pipeline.stages import LAST_VARIANT_STAGE


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
    desc_kor: str | None  # None: the job has no job_inputs row
    desc_eng: str | None
    ad_copy_eng: str | None
    ad_copy_kor: str | None
    prompt: str | None
    product_image_asset_id: str | None


def variant_row(conn: Connection, job_variants_id: str) -> VariantRow | None:
    row = conn.execute(
        sa.text(
            """SELECT v.job_variants_id::text, v.job_id::text, j.tenant_id, v.creation_order,
                      v.img_asset_id::text, v.overlaid_img_asset_id::text, v.current_step, v.status
                 FROM jobs_variants v JOIN jobs j USING (job_id)
                WHERE v.job_variants_id = :id"""
        ),
        {"id": job_variants_id},
    ).first()
    return VariantRow(*row) if row else None


def job_inputs_row(conn: Connection, job_id: str) -> JobInputsRow | None:
    row = conn.execute(
        sa.text(
            """SELECT j.job_id::text, j.tenant_id, j.expected_variants, i.desc_kor, i.desc_eng,
                      i.ad_copy_eng, i.ad_copy_kor, i.prompt, i.product_image_asset_id::text
                 FROM jobs j LEFT JOIN job_inputs i USING (job_id)
                WHERE j.job_id = :id"""
        ),
        {"id": job_id},
    ).first()
    return JobInputsRow(*row) if row else None


def image_path(conn: Connection, image_asset_id: str) -> str | None:
    """The store key of an image asset."""
    row = conn.execute(
        sa.text("SELECT path FROM image_assets WHERE image_asset_id = :id"), {"id": image_asset_id}
    ).first()
    return None if row is None else str(row[0])


def has_detection_run(conn: Connection, job_variants_id: str) -> bool:
    return conn.execute(sa.text("SELECT 1 FROM detection_runs WHERE job_variants_id = :v"),
                        {"v": job_variants_id}).first() is not None


def detections(conn: Connection, job_variants_id: str) -> list[Any]:
    """yolo_detect's detections (label, class_id, score, x1, y1, x2, y2, forbidden), best first."""
    return list(conn.execute(
        sa.text("SELECT label, class_id, score, x1, y1, x2, y2, forbidden FROM detections "
                "WHERE job_variants_id = :v ORDER BY score DESC, detection_id"),
        {"v": job_variants_id},
    ).all())


def forbidden_mask_path(conn: Connection, job_variants_id: str) -> str | None:
    """The key of yolo_detect's mask image; None when it recorded none."""
    row = conn.execute(
        sa.text("SELECT a.path FROM detection_runs r JOIN image_assets a ON a.image_asset_id = r.mask_asset_id "
                "WHERE r.job_variants_id = :v"),
        {"v": job_variants_id},
    ).first()
    return None if row is None else str(row[0])


@dataclass(frozen=True)
class LayoutRow:
    id: str  # the planner's proposal_id, or the overlay's overlay_id
    layout: dict[str, Any]


def planner_proposal(conn: Connection, job_variants_id: str) -> LayoutRow | None:
    row = conn.execute(sa.text("SELECT proposal_id::text, layout FROM planner_proposals WHERE job_variants_id = :v"),
                       {"v": job_variants_id}).first()
    return LayoutRow(row[0], row[1]) if row else None


# Keys of a layout written by code older than migration 010 (which renamed them in the rows it
# found): a host still on that code, sharing the database during an upgrade, may write more.
_LAYOUT_KEYS_BEFORE_010 = {"font_size": "font_size_px", "line_spacing": "line_spacing_px"}


def overlay_layout(conn: Connection, job_variants_id: str) -> LayoutRow | None:
    row = conn.execute(sa.text("SELECT overlay_id::text, layout FROM overlay_layouts WHERE job_variants_id = :v"),
                       {"v": job_variants_id}).first()
    if row is None:
        return None
    layout = dict(row[1])
    for old, new in _LAYOUT_KEYS_BEFORE_010.items():
        if old in layout and new not in layout:
            layout[new] = layout.pop(old)
    return LayoutRow(row[0], layout)


def font_recommendation(conn: Connection, job_variants_id: str) -> dict[str, Any] | None:
    """vlm_analyze's font recommendation, as it stored it; None when it made none."""
    row = conn.execute(
        sa.text("SELECT response -> 'font' FROM vlm_traces WHERE job_variants_id = :v AND operation_type = 'analyze'"),
        {"v": job_variants_id},
    ).first()
    return row[0] if row and row[0] else None


def finished_variant_images(conn: Connection, job_id: str) -> list[tuple[int, str]]:
    """(creation_order, overlaid image key) of the job's variants that finished every stage."""
    rows = conn.execute(
        sa.text(
            """SELECT v.creation_order, a.path FROM jobs_variants v
                 JOIN image_assets a ON a.image_asset_id = v.overlaid_img_asset_id
                WHERE v.job_id = :j AND v.current_step = :last AND v.status = 'done'
                ORDER BY v.creation_order"""
        ),
        {"j": job_id, "last": LAST_VARIANT_STAGE},
    ).all()
    return [(r[0], r[1]) for r in rows]


def translated_ad_copy(conn: Connection, job_id: str) -> str | None:
    """ad_copy_gen_kor's Korean ad copy, None before that stage ran."""
    text: str | None = conn.execute(
        sa.text("SELECT text FROM ad_copies WHERE job_id = :j AND kind = 'eng_to_kor'"), {"j": job_id}
    ).scalar()
    return text
