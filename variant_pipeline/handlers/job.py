"""Job-level stage handlers: ad_copy_gen_kor and instagram_feed_gen, once per job."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from variant_pipeline import stages as stage_graph
from variant_pipeline.handlers.base import (
    HandlerContext,
    StageInputError,
    StageOutcome,
    Thumbnail,
    load_job_inputs,
    open_image,
)
from variant_pipeline.handlers.brief import ensure_brief, upsert_ad_copy, upsert_llm_trace


def _finished_variant_images(ctx: HandlerContext, job_id: str) -> list[tuple[int, str]]:
    """(creation_order, overlaid image path) of the variants that finished every stage."""
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


def ad_copy_gen_kor(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.copywriting import ad_copy_gen_kor as translate

    job_id = ctx.partition_key
    if not _finished_variant_images(ctx, job_id):
        raise StageInputError(f"job {job_id} has no variant that finished {stage_graph.LAST_VARIANT_STAGE}")
    brief = ensure_brief(ctx, job_id, need=["ad_copy_eng"])
    start = time.perf_counter()
    result = translate(ctx.models.get("text_model"), brief.ad_copy_eng, seed=ctx.settings.seed_base)
    latency = int((time.perf_counter() - start) * 1000)
    trace = result.trace()

    def write(conn: Connection) -> None:
        trace_id = upsert_llm_trace(conn, job_id, "eng_to_kor", trace)
        upsert_ad_copy(conn, job_id, "eng_to_kor", result.ad_copy_kor, trace_id)

    return StageOutcome(
        write=write,
        metadata={"ad_copy_eng": brief.ad_copy_eng, "ad_copy_kor": result.ad_copy_kor,
                  "issues": list(result.issues), "latency_ms": latency},
        model=ctx.models.describe("text_model"),
    )


def instagram_feed_gen(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.copywriting import FeedInputs
    from variant_pipeline.work.copywriting import instagram_feed_gen as write_feed

    job_id = ctx.partition_key
    with ctx.engine.connect() as conn:
        inputs = load_job_inputs(conn, job_id)
        translated = conn.execute(
            sa.text("SELECT text FROM ad_copies WHERE job_id = :j AND kind = 'eng_to_kor'"), {"j": job_id}
        ).scalar()
    if translated is None:
        raise StageInputError(f"job {job_id} has no ad_copy_gen_kor output yet")
    brief = ensure_brief(ctx, job_id, need=["ad_copy_eng"])
    start = time.perf_counter()
    feed = write_feed(
        ctx.models.get("text_model"),
        FeedInputs(ad_copy_eng=brief.ad_copy_eng, product_description=inputs.desc_kor, ad_copy_kor=translated),
        seed=ctx.settings.seed_base,
    )
    latency = int((time.perf_counter() - start) * 1000)
    trace = feed.trace()
    model = ctx.models.describe("text_model")

    def write(conn: Connection) -> None:
        trace_id = upsert_llm_trace(conn, job_id, "feed_gen", trace)
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
            {"j": job_id, "t": trace_id, "kor": translated, "eng": brief.ad_copy_eng, "desc": inputs.desc_kor,
             "copy": feed.instagram_ad_copy, "tags": feed.hashtags, "model": model, "temp": feed.temperature,
             "maxt": feed.max_tokens, "ms": latency},
        )

    thumbnails = [
        Thumbnail(f"variant {order}", open_image(ctx.store, path, f"overlaid image of variant {order} of job {job_id}"))
        for order, path in _finished_variant_images(ctx, job_id)
    ]
    return StageOutcome(
        write=write,
        metadata={"instagram_ad_copy": feed.instagram_ad_copy, "hashtags": " ".join(feed.hashtags),
                  "parsed_json": feed.parsed_json, "hashtags_source": feed.hashtags_source,
                  "issues": list(feed.issues), "variants_in_feed": len(thumbnails), "latency_ms": latency},
        thumbnails=thumbnails,
        model=model,
    )
