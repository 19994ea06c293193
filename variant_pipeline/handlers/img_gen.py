"""img_gen: one generated image per variant, from the job's prompt (or English description) and
product photo."""

from __future__ import annotations

import time

from variant_pipeline.data.engine import Connection
from variant_pipeline.data.stage_outputs import replace_variant_image, set_variant_image
from variant_pipeline.handlers.base import HandlerContext, StageOutcome, Thumbnail, elapsed_ms, stage_model
from variant_pipeline.handlers.brief import ensure_brief
from variant_pipeline.handlers.rows import load_job_inputs, product_image, variant_of


def run(ctx: HandlerContext) -> StageOutcome:
    from variant_pipeline.work.img_gen import ImgGenRequest, generate_variants

    variant = variant_of(ctx)
    with ctx.engine.connect() as conn:
        inputs = load_job_inputs(conn, variant.job_id)
    product = product_image(ctx, inputs)
    prompt = inputs.prompt
    if not (prompt or "").strip():
        # Without a prompt, the English description is the scene to draw.
        prompt = ensure_brief(ctx, variant.job_id, need=["desc_eng"]).desc_eng
    s = ctx.settings
    start = time.perf_counter()
    [generated] = generate_variants(
        ctx.models.get(stage_model("img_gen")),
        ImgGenRequest(
            job_id=variant.job_id, prompt=prompt, product_image=product, n_variants=1,
            first_order=variant.creation_order, width=s.image_width, height=s.image_height,
            steps=s.diffusion_steps, seed_base=s.seed_base,
        ),
    )
    latency = elapsed_ms(start)
    stored = ctx.store.save_image(variant.tenant_id, "generated", generated.image)

    def write(conn: Connection) -> None:
        asset_id = replace_variant_image(conn, variant, stored, "generated")
        set_variant_image(conn, variant.job_variants_id, "img_asset_id", asset_id)

    return StageOutcome(
        write=write,
        metadata={"mode": generated.mode, "seed": generated.seed, "prompt": generated.prompt,
                  "width": generated.image.width, "height": generated.image.height, "latency_ms": latency},
        thumbnails=[Thumbnail("generated", generated.image, stored.uri)],
        model=ctx.models.describe(stage_model("img_gen")),
    )
