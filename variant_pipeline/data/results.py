"""The results contract of one job, read from PostgreSQL: what the original app fetched per job.

``job_results`` answers at any moment: a finished job with every variant's final image, scores
and check outcomes, the Korean ad copy, the Instagram copy and the hashtags; a job still running
with its state and what exists so far (stages not yet run are ``pending``); a failed variant
with its reason. The ``results`` command, the job gallery in the Dagster UI and the asset checks
all read through here. No Dagster, no models.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from variant_pipeline import stages as stage_graph
from variant_pipeline.config import Settings
from variant_pipeline.data.jobs import JobStatus, get_job_status
from variant_pipeline.data.storage import AssetStore
from variant_pipeline.quality import CHECK_STAGES, CheckOutcome, evaluate_all

# evaluations.evaluation_type of each evaluation stage (the judge's verdict lives in vlm_traces).
EVALUATION_TYPES: dict[str, str] = {"ocr_eval": "ocr", "readability_eval": "readability", "iou_eval": "iou"}
# (stage, key in its record) of the scores a reviewer looks at, under the contract's names.
SCORES: dict[str, tuple[str, str]] = {
    "ocr_accuracy": ("ocr_eval", "ocr_accuracy"),
    "contrast_ratio": ("readability_eval", "contrast_ratio"),
    "contrast_ratio_p10": ("readability_eval", "contrast_ratio_p10"),
    "readability_score": ("readability_eval", "readability_score"),
    "max_iou_text": ("iou_eval", "max_iou_text"),
    "on_brief": ("vlm_judge", "on_brief"),
}


@dataclass(frozen=True)
class VariantResult:
    job_variants_id: str
    creation_order: int
    state: str  # done | failed | running | queued
    stage: str
    status: str
    error: str | None
    # The final (overlaid) image: an absolute path, or an s3:// URI when the asset root is a
    # bucket; None before overlay.
    image_path: str | None
    overlay_text: str | None
    scores: dict[str, Any]
    checks: list[CheckOutcome]


@dataclass(frozen=True)
class JobResults:
    job_id: str
    tenant_id: str
    state: str  # done | failed | running | queued
    stage: str
    status: str
    error: str | None
    expected_variants: int
    ad_copy_kor: str | None  # ad_copy_gen_kor's Korean ad copy
    instagram_copy: str | None
    hashtags: list[str]
    # ISO times set by prune: Dagster partitions removed (by age or the partition budget: the job
    # is then not in Dagster's partition lists, its rows answer here), and images removed (age).
    partitions_removed_at: str | None
    files_removed_at: str | None
    variants: list[VariantResult]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # variants and their checks too, in field order


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def retention_line(partitions_removed_at: str | None, files_removed_at: str | None) -> str | None:
    """What prune has removed of a job, in one line (None: nothing), from when it removed the
    job's partitions and its files, as the caller shows times; for ``status``, ``results`` and
    the gallery alike."""
    if files_removed_at:
        return f"pruned at {files_removed_at}: its Dagster partitions and images were removed (rows kept)"
    if partitions_removed_at:
        return (f"Dagster partitions removed at {partitions_removed_at} to keep the partition budget "
                "(rows and images kept; Dagster keeps its runs and history but lists its partitions no more)")
    return None


def _state(stage: str, status: str, last_stage: str) -> str:
    if status == "failed":
        return "failed"
    if status == "done" and stage == last_stage:
        return "done"
    return "running" if status in ("running", "done") else "queued"


def evaluation_records(conn: Connection, variant_ids: list[str]) -> dict[str, dict[str, Mapping[str, Any]]]:
    """variant id -> {evaluation stage -> its stored record} for every check stage that ran."""
    records: dict[str, dict[str, Mapping[str, Any]]] = {v: {} for v in variant_ids}
    if not variant_ids:
        return records
    stage_of_type = {t: s for s, t in EVALUATION_TYPES.items()}
    for row in conn.execute(
        sa.text("SELECT job_variants_id::text, evaluation_type, metrics FROM evaluations "
                "WHERE job_variants_id = ANY(CAST(:ids AS uuid[]))"), {"ids": variant_ids}):
        records[row[0]][stage_of_type[row[1]]] = row[2]
    for row in conn.execute(
        sa.text("SELECT job_variants_id::text, response FROM vlm_traces "
                "WHERE operation_type = 'judge' AND job_variants_id = ANY(CAST(:ids AS uuid[]))"), {"ids": variant_ids}):
        records[row[0]]["vlm_judge"] = row[1]
    return records


def variant_checks(engine: Engine, job_variants_id: str, settings: Settings,
                   stages: tuple[str, ...] = CHECK_STAGES) -> list[CheckOutcome]:
    """The check outcomes of one variant for ``stages``, from what those stages stored."""
    with engine.connect() as conn:
        records = evaluation_records(conn, [job_variants_id])[job_variants_id]
    return evaluate_all(records, settings, stages)


def job_results(engine: Engine, job_id: uuid.UUID | str, settings: Settings,
                store: AssetStore | None = None) -> JobResults:
    """The results contract of ``job_id`` (``JobNotFoundError`` for an unknown job); image URIs are
    ``store``'s (default: the configured asset root)."""
    with engine.connect() as conn:
        status: JobStatus = get_job_status(conn, job_id)
        jid = str(status.job_id)
        variant_ids = [str(v.job_variants_id) for v in status.variants]
        records = evaluation_records(conn, variant_ids)
        finals = {r[0]: (r[1], r[2]) for r in conn.execute(
            sa.text("""SELECT v.job_variants_id::text, a.path, o.layout ->> 'text'
                         FROM jobs_variants v
                         LEFT JOIN image_assets a ON a.image_asset_id = v.overlaid_img_asset_id
                         LEFT JOIN overlay_layouts o ON o.job_variants_id = v.job_variants_id
                        WHERE v.job_id = :j"""), {"j": jid})}
        ad_copy = conn.execute(sa.text("SELECT text FROM ad_copies WHERE job_id = :j AND kind = 'eng_to_kor'"),
                               {"j": jid}).scalar()
        feed = conn.execute(sa.text("SELECT instagram_ad_copy, hashtags FROM instagram_feeds WHERE job_id = :j"),
                            {"j": jid}).first()
    store = store or AssetStore.from_settings(settings)
    variants = []
    for v in status.variants:
        vid = str(v.job_variants_id)
        path, text = finals.get(vid, (None, None))
        stored = records[vid]
        variants.append(VariantResult(
            job_variants_id=vid, creation_order=v.creation_order,
            state=_state(v.stage, v.status, stage_graph.LAST_VARIANT_STAGE), stage=v.stage, status=v.status,
            error=v.error, image_path=store.uri_for(path) if path else None, overlay_text=text,
            scores={name: (stored.get(stage) or {}).get(key) for name, (stage, key) in SCORES.items()},
            checks=evaluate_all(stored, settings),
        ))
    return JobResults(
        job_id=jid, tenant_id=status.tenant_id,
        state=_state(status.stage, status.status, stage_graph.LAST_JOB_STAGE), stage=status.stage,
        status=status.status, error=status.error, expected_variants=status.expected_variants,
        ad_copy_kor=ad_copy, instagram_copy=feed[0] if feed else None, hashtags=list(feed[1]) if feed else [],
        partitions_removed_at=_iso(status.partitions_removed_at), files_removed_at=_iso(status.pruned_at),
        variants=variants,
    )
