"""Jobs as the outside world sees them: tenants, submitting a job (inputs, photo, variants in one
transaction), and reading a job's status."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from variant_pipeline import stages as stage_graph
from variant_pipeline.data.engine import transaction
from variant_pipeline.validation import (
    DEFAULT_VARIANTS,
    MAX_AD_COPY_EN_CHARS,
    MAX_AD_COPY_KOR_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_PROMPT_CHARS,
    MAX_TENANT_NAME_CHARS,
    InputError,
    check_image_file,
    check_tenant_id,
    check_text,
    check_variant_count,
    load_image_file,
    parse_uuid,
)


class UnknownTenantError(InputError):
    pass


class JobNotFoundError(InputError):
    pass


# --- Tenants and submission -----------------------------------------------------------------


def add_tenant(engine: Engine, tenant_id: str, display_name: str | None = None) -> bool:
    """Create a tenant if missing (idempotent). True if it was created now."""
    check_tenant_id(tenant_id)
    display_name = check_text(display_name, "tenant name", MAX_TENANT_NAME_CHARS, single_line=True)
    with engine.begin() as conn:
        result = conn.execute(
            sa.text(
                "INSERT INTO tenants (tenant_id, display_name) VALUES (:t, :n) ON CONFLICT (tenant_id) DO NOTHING"
            ),
            {"t": tenant_id, "n": display_name},
        )
        return result.rowcount == 1


@dataclass(frozen=True)
class JobRequest:
    """A checked submission: build it with ``JobRequest.build`` (which validates every field)."""

    tenant_id: str
    description_kor: str
    ad_copy_eng: str | None = None
    ad_copy_kor: str | None = None
    prompt: str | None = None
    image_path: Path | None = None
    variants: int = DEFAULT_VARIANTS

    @classmethod
    def build(
        cls,
        *,
        tenant_id: str,
        description_kor: str | None,
        ad_copy_eng: str | None = None,
        ad_copy_kor: str | None = None,
        prompt: str | None = None,
        image_path: Path | str | None = None,
        variants: int = DEFAULT_VARIANTS,
    ) -> JobRequest:
        check_tenant_id(tenant_id)
        desc = check_text(description_kor, "description", MAX_DESCRIPTION_CHARS, required=True)
        assert desc is not None
        path = None
        if image_path is not None:
            try:
                path = Path(image_path).expanduser().resolve()
            except (RuntimeError, OSError) as exc:  # a symlink loop, an unreadable folder
                raise InputError(f"image path cannot be resolved ({exc}): {image_path}") from None
        if path is not None:
            check_image_file(path)
        return cls(
            tenant_id=tenant_id,
            description_kor=desc,
            ad_copy_eng=check_text(ad_copy_eng, "English ad copy", MAX_AD_COPY_EN_CHARS),
            ad_copy_kor=check_text(ad_copy_kor, "Korean ad copy", MAX_AD_COPY_KOR_CHARS, single_line=True),
            prompt=check_text(prompt, "prompt", MAX_PROMPT_CHARS),
            image_path=path,
            variants=check_variant_count(variants),
        )


@dataclass(frozen=True)
class SubmittedJob:
    job_id: uuid.UUID
    variant_ids: list[uuid.UUID]
    product_image_asset_id: uuid.UUID | None


def submit_job(engine: Engine, request: JobRequest, store: Any | None = None, origin: str = "cli:submit") -> SubmittedJob:
    """Insert the job, its inputs and its variants in one transaction.

    ``store`` (an ``AssetStore``) receives the product photo; it is required when the request
    has one. If the transaction fails, the saved photo is removed again.
    """
    stored = None
    if request.image_path is not None:
        if store is None:
            raise ValueError("an AssetStore is needed to submit a product image")
        # Checked again (the file may have changed since build()), and stored normalised: upright
        # RGB (RGBA with a cut-out) whatever mode, bit depth or orientation tag the file had.
        _checked, image = load_image_file(request.image_path)
        stored = store.save_image(request.tenant_id, "product", image, fmt="PNG")
    try:
        with transaction(engine, origin) as conn:
            # Lock the tenant row so it cannot vanish mid-submission.
            tenant = conn.execute(
                sa.text("SELECT 1 FROM tenants WHERE tenant_id = :t FOR KEY SHARE"), {"t": request.tenant_id}
            ).first()
            if tenant is None:
                raise UnknownTenantError(
                    f"unknown tenant {request.tenant_id!r}; add it first with: "
                    f"variant-pipeline tenant add {request.tenant_id}"
                )
            job_id = conn.execute(
                sa.text(
                    """
                    INSERT INTO jobs (tenant_id, current_step, status, expected_variants)
                    VALUES (:t, :stage, 'queued', :n) RETURNING job_id
                    """
                ),
                {"t": request.tenant_id, "stage": stage_graph.FIRST_VARIANT_STAGE, "n": request.variants},
            ).scalar_one()
            job_id = _as_uuid(job_id)
            asset_id = None
            if stored is not None:
                asset_id = conn.execute(
                    sa.text(
                        """
                        INSERT INTO image_assets (tenant_id, job_id, image_type, path, width, height, sha256)
                        VALUES (:t, :j, 'product', :p, :w, :h, :s) RETURNING image_asset_id
                        """
                    ),
                    {"t": request.tenant_id, "j": str(job_id), "p": stored.relative_path,
                     "w": stored.width, "h": stored.height, "s": stored.sha256},
                ).scalar_one()
                asset_id = _as_uuid(asset_id)
            conn.execute(
                sa.text(
                    """
                    INSERT INTO job_inputs (job_id, desc_kor, ad_copy_eng, ad_copy_kor, prompt, product_image_asset_id)
                    VALUES (:j, :d, :ae, :ak, :p, :a)
                    """
                ),
                {"j": str(job_id), "d": request.description_kor, "ae": request.ad_copy_eng,
                 "ak": request.ad_copy_kor, "p": request.prompt, "a": str(asset_id) if asset_id else None},
            )
            variant_ids = conn.execute(
                sa.text(
                    """
                    INSERT INTO jobs_variants (job_id, creation_order, current_step, status)
                    SELECT :j, n, :stage, 'queued' FROM generate_series(1, :count) AS n
                    RETURNING job_variants_id, creation_order
                    """
                ),
                {"j": str(job_id), "stage": stage_graph.FIRST_VARIANT_STAGE, "count": request.variants},
            ).all()
    except BaseException:
        if stored is not None:
            store.delete(stored.relative_path)
        raise
    ordered = [_as_uuid(row[0]) for row in sorted(variant_ids, key=lambda r: r[1])]
    return SubmittedJob(job_id=job_id, variant_ids=ordered, product_image_asset_id=asset_id)


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))

# --- Status ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantStatus:
    job_variants_id: uuid.UUID
    creation_order: int
    stage: str  # the row's current_step
    status: str
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class JobStatus:
    job_id: uuid.UUID
    tenant_id: str
    stage: str  # the row's current_step
    status: str
    expected_variants: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # Set by prune: when its Dagster partitions were removed (by the age rule or the partition
    # budget), and when the age rule removed its files too.
    partitions_removed_at: datetime | None
    pruned_at: datetime | None
    variants: list[VariantStatus]

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, uuid.UUID):
                return str(value)
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, list):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return plain(asdict(self))


def get_job_status(engine_or_conn: Engine | Connection, job_id: uuid.UUID | str) -> JobStatus:
    job_uuid = job_id if isinstance(job_id, uuid.UUID) else parse_uuid(job_id, "job id")
    with _connection(engine_or_conn) as conn:
        job = conn.execute(
            sa.text(
                """
                SELECT job_id, tenant_id, current_step, status, expected_variants, error,
                       created_at, updated_at, started_at, finished_at, partitions_removed_at, pruned_at
                  FROM jobs WHERE job_id = :j
                """
            ),
            {"j": str(job_uuid)},
        ).first()
        if job is None:
            raise JobNotFoundError(f"no job with id {job_uuid}")
        variants = conn.execute(
            sa.text(
                """
                SELECT job_variants_id, creation_order, current_step, status, error,
                       created_at, updated_at, started_at, finished_at
                  FROM jobs_variants WHERE job_id = :j ORDER BY creation_order
                """
            ),
            {"j": str(job_uuid)},
        ).all()
    return JobStatus(
        _as_uuid(job[0]), *job[1:],
        variants=[VariantStatus(_as_uuid(v[0]), *v[1:]) for v in variants],
    )


@contextmanager
def _connection(engine_or_conn: Engine | Connection) -> Iterator[Connection]:
    if isinstance(engine_or_conn, Connection):
        yield engine_or_conn
    else:
        with engine_or_conn.connect() as conn:
            yield conn


def variant_ids_of_jobs(engine: Engine, job_ids: Sequence[str]) -> list[str]:
    """The variants of these jobs, job by job in creation order."""
    return _ids(engine, "SELECT job_variants_id::text FROM jobs_variants WHERE job_id = ANY(CAST(:ids AS uuid[])) "
                        "ORDER BY job_id, creation_order", job_ids)


def job_ids_of_variants(engine: Engine, variant_ids: Sequence[str]) -> list[str]:
    """The jobs these variants belong to."""
    return _ids(engine, "SELECT DISTINCT job_id::text FROM jobs_variants "
                        "WHERE job_variants_id = ANY(CAST(:ids AS uuid[]))", variant_ids)


def _ids(engine: Engine, select: str, ids: Sequence[str]) -> list[str]:
    if not ids:
        return []
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text(select), {"ids": [str(uuid.UUID(i)) for i in ids]})]
