"""What another system writing straight into the tables does: jobs, their inputs, variants and
images inserted as plain rows, with none of ``jobs.submit_job``'s checks.

The soak's upstream producers and the capacity benchmark's bulk fill stand in for such a system.
The triggers treat these rows as any others (an inserted variant is an outbox event the pipeline
acts on), and the stages apply the input limits to them (``variant_pipeline.validation``). Writes
of a state to a row that already exists are ``partition_state.set_state``.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def insert_job(conn: Connection, tenant_id: str, expected_variants: int) -> str:
    """A job row with its defaults (queued at the first variant stage); returns its id."""
    job_id = conn.execute(sa.text(
        "INSERT INTO jobs (tenant_id, expected_variants) VALUES (:t, :n) RETURNING job_id"),
        {"t": tenant_id, "n": expected_variants}).scalar_one()
    return str(job_id)


def insert_job_inputs(conn: Connection, job_id: str, desc_kor: str, *, ad_copy_kor: str | None = None,
                      product_image_asset_id: str | None = None) -> None:
    """A job's inputs: its Korean description, optionally Korean copy and a product photo row."""
    conn.execute(sa.text("INSERT INTO job_inputs (job_id, desc_kor, ad_copy_kor, product_image_asset_id) "
                      "VALUES (:j, :d, :k, :a)"),
                 {"j": job_id, "d": desc_kor, "k": ad_copy_kor, "a": product_image_asset_id})


def insert_image_asset(conn: Connection, tenant_id: str, job_id: str, image_type: str, path: str, *,
                       width: int | None = None, height: int | None = None, sha256: str | None = None) -> str:
    """An image row naming a file under the asset store; returns its id."""
    image_asset_id = conn.execute(sa.text(
        """INSERT INTO image_assets (tenant_id, job_id, image_type, path, width, height, sha256)
           VALUES (:t, :j, :type, :p, :w, :h, :s) RETURNING image_asset_id"""),
        {"t": tenant_id, "j": job_id, "type": image_type, "p": path, "w": width, "h": height, "s": sha256},
    ).scalar_one()
    return str(image_asset_id)


def insert_variant(conn: Connection, job_id: str, creation_order: int, stage: str, status: str, *,
                   img_asset_id: str | None = None) -> str:
    """A variant row at ``(stage, status)``, with its generated image when it has one; returns its id."""
    variant_id = conn.execute(sa.text(
        """INSERT INTO jobs_variants (job_id, creation_order, current_step, status, img_asset_id)
           VALUES (:j, :o, :stage, :status, :a) RETURNING job_variants_id"""),
        {"j": job_id, "o": creation_order, "stage": stage, "status": status, "a": img_asset_id}).scalar_one()
    return str(variant_id)


def insert_variant_if_absent(conn: Connection, job_id: str, creation_order: int, stage: str, status: str) -> bool:
    """``insert_variant`` unless the job already has a variant of that number; returns whether it inserted."""
    inserted = conn.execute(sa.text(
        """INSERT INTO jobs_variants (job_id, creation_order, current_step, status)
           VALUES (:j, :o, :stage, :status) ON CONFLICT DO NOTHING"""),
        {"j": job_id, "o": creation_order, "stage": stage, "status": status}).rowcount
    return inserted == 1


def assign_image(conn: Connection, image_asset_id: str, variant_id: str) -> None:
    """An image row now belongs to a variant (inserted after the image that it names)."""
    conn.execute(sa.text("UPDATE image_assets SET job_variants_id = :v WHERE image_asset_id = :a"),
                 {"v": variant_id, "a": image_asset_id})


def insert_jobs_in_bulk(conn: Connection, tenant_id: str, n_jobs: int, *, first_stage: str, desc_kor: str,
                        prompt: str) -> list[tuple[str, str]]:
    """``n_jobs`` jobs of 3 variants in one statement, each with its inputs, every row queued at
    ``first_stage`` (a load generator's fill); returns (job_variants_id, job_id) of each variant."""
    rows = conn.execute(sa.text(
        """WITH new_jobs AS (
               INSERT INTO jobs (tenant_id, current_step, status, expected_variants)
               SELECT :tenant, :first, 'queued', 3 FROM generate_series(1, :n)
               RETURNING job_id
           ), inputs AS (
               INSERT INTO job_inputs (job_id, desc_kor, prompt) SELECT job_id, :desc, :prompt FROM new_jobs
           )
           INSERT INTO jobs_variants (job_id, creation_order, current_step, status)
           SELECT job_id, n, :first, 'queued' FROM new_jobs, generate_series(1, 3) AS n
           RETURNING job_variants_id::text, job_id::text"""),
        {"tenant": tenant_id, "first": first_stage, "n": n_jobs, "desc": desc_kor, "prompt": prompt}).all()
    return [(r[0], r[1]) for r in rows]
