"""ad_copy_gen_kor (job level): the English ad copy translated to Korean, once the variants are done."""

from __future__ import annotations

import time

from variant_pipeline import stages as stage_graph
from variant_pipeline.data.engine import Connection
from variant_pipeline.data.stage_outputs import upsert_ad_copy, upsert_llm_trace
from variant_pipeline.handlers.base import HandlerContext, StageOutcome, elapsed_ms, stage_model
from variant_pipeline.handlers.brief import ensure_brief
from variant_pipeline.handlers.rows import finished_variant_images
from variant_pipeline.state.attempts import StageInputError


def run(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.copywriting import ad_copy_gen_kor as translate

    job_id = ctx.partition_key
    if not finished_variant_images(ctx, job_id):
        raise StageInputError(f"job {job_id} has no variant that finished {stage_graph.LAST_VARIANT_STAGE}")
    brief = ensure_brief(ctx, job_id, need=["ad_copy_eng"])
    start = time.perf_counter()
    result = translate(ctx.models.get(stage_model("ad_copy_gen_kor")), brief.ad_copy_eng, seed=ctx.settings.seed_base)
    latency = elapsed_ms(start)
    trace = result.trace()

    def write(conn: Connection) -> None:
        trace_id = upsert_llm_trace(conn, job_id, "eng_to_kor", trace)
        upsert_ad_copy(conn, job_id, "eng_to_kor", result.ad_copy_kor, trace_id)

    return StageOutcome(
        write=write,
        metadata={"ad_copy_eng": brief.ad_copy_eng, "ad_copy_kor": result.ad_copy_kor,
                  "issues": list(result.issues), "latency_ms": latency},
        model=ctx.models.describe(stage_model("ad_copy_gen_kor")),
    )
