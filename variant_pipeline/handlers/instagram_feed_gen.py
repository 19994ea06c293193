"""instagram_feed_gen (job level): the Instagram post and hashtags (the asset adds the job gallery)."""

from __future__ import annotations

import time

from variant_pipeline.data.engine import Connection
from variant_pipeline.data.stage_outputs import upsert_instagram_feed, upsert_llm_trace
from variant_pipeline.handlers.base import (
    HandlerContext,
    StageOutcome,
    elapsed_ms,
    stage_model,
)
from variant_pipeline.handlers.brief import ensure_brief
from variant_pipeline.handlers.rows import (
    finished_variant_images,
    load_job_inputs,
    translated_ad_copy,
)
from variant_pipeline.state.attempts import StageInputError


def run(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.copywriting import FeedInputs
    from variant_pipeline.work.copywriting import instagram_feed_gen as write_feed

    job_id = ctx.partition_key
    with ctx.engine.connect() as conn:
        inputs = load_job_inputs(conn, job_id)
    translated = translated_ad_copy(ctx, job_id)
    if translated is None:
        raise StageInputError(f"job {job_id} has no ad_copy_gen_kor output yet")
    brief = ensure_brief(ctx, job_id, need=["ad_copy_eng"])
    start = time.perf_counter()
    feed = write_feed(
        ctx.models.get(stage_model("instagram_feed_gen")),
        FeedInputs(ad_copy_eng=brief.ad_copy_eng, product_description=inputs.desc_kor, ad_copy_kor=translated),
        seed=ctx.settings.seed_base,
    )
    latency = elapsed_ms(start)
    trace = feed.trace()
    model = ctx.models.describe(stage_model("instagram_feed_gen"))

    def write(conn: Connection) -> None:
        trace_id = upsert_llm_trace(conn, job_id, "feed_gen", trace)
        upsert_instagram_feed(conn, job_id, llm_trace_id=trace_id, ad_copy_kor=translated,
                              ad_copy_eng=brief.ad_copy_eng, product_description=inputs.desc_kor,
                              instagram_ad_copy=feed.instagram_ad_copy, hashtags=feed.hashtags, model=model,
                              temperature=feed.temperature, max_tokens=feed.max_tokens, latency_ms=latency)

    # The variants' images are shown by the job asset's gallery (assets/stage_assets.py).
    return StageOutcome(
        write=write,
        metadata={"instagram_ad_copy": feed.instagram_ad_copy, "hashtags": " ".join(feed.hashtags),
                  "parsed_json": feed.parsed_json, "hashtags_source": feed.hashtags_source,
                  "issues": list(feed.issues), "variants_in_feed": len(finished_variant_images(ctx, job_id)),
                  "latency_ms": latency},
        model=model,
    )
