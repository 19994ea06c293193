"""The job's brief: the texts every stage reads, filled in once per job when a job arrives without them.

A job may be submitted with only its Korean description. The English description, the English
ad copy (vlm_analyze validates against it) and the short Korean line (overlay draws it) are then
written by the text model, once per job even when all variants ask at the same moment: an
advisory lock serializes the askers, and whoever gets it second finds the texts already there.
The lock is taken in a transaction that writes nothing, so it assigns no transaction id and never
holds back the outbox reader while the model is generating.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from variant_pipeline.data.engine import transaction
from variant_pipeline.data.locks import wait_for_lock
from variant_pipeline.data.stage_outputs import update_brief_texts, upsert_ad_copy, upsert_llm_trace
from variant_pipeline.handlers.base import HandlerContext
from variant_pipeline.handlers.rows import JobInputsRow, load_job_inputs
from variant_pipeline.stages import BRIEF_MODEL
from variant_pipeline.work.types import Brief

BRIEF_FIELDS = ("desc_eng", "ad_copy_eng", "ad_copy_kor")


def _lock_key(job_id: str) -> int:
    return zlib.crc32(f"brief:{job_id}".encode()) - 2**31


def ensure_brief(ctx: HandlerContext, job_id: str, need: Iterable[str] = BRIEF_FIELDS) -> Brief:
    needed = set(need)
    unknown = needed - set(BRIEF_FIELDS)
    if unknown:
        raise ValueError(f"unknown brief fields: {sorted(unknown)}")
    with ctx.engine.connect() as lock_conn, lock_conn.begin():
        wait_for_lock(lock_conn, _lock_key(job_id))
        inputs = load_job_inputs(lock_conn, job_id)
        missing = _missing(inputs, needed)
        if missing:
            inputs = _generate(ctx, inputs, missing)
        return Brief(
            desc_kor=inputs.desc_kor,
            desc_eng=inputs.desc_eng or "",
            ad_copy_eng=inputs.ad_copy_eng or "",
            ad_copy_kor=inputs.ad_copy_kor or "",
            generated=tuple(missing),
        )


def _missing(inputs: JobInputsRow, needed: set[str]) -> list[str]:
    """The texts to write, in order: each is written from the one before it (the English copy
    from the English description, the short Korean line from the description and English copy)."""

    def present(name: str) -> bool:
        return bool((getattr(inputs, name) or "").strip())

    want = set(needed)
    if "ad_copy_kor" in want and not present("ad_copy_eng"):
        want.add("ad_copy_eng")
    if "ad_copy_eng" in want and not present("ad_copy_eng"):
        want.add("desc_eng")
    return [f for f in BRIEF_FIELDS if f in want and not present(f)]


def _generate(ctx: HandlerContext, inputs: JobInputsRow, missing: list[str]) -> JobInputsRow:
    from variant_pipeline.work import copywriting

    model = ctx.models.get(BRIEF_MODEL)
    values = {f: getattr(inputs, f) for f in BRIEF_FIELDS}
    traces: list[tuple[str, dict]] = []
    if "desc_eng" in missing:
        result = copywriting.translate_description_to_english(model, inputs.desc_kor, seed=ctx.settings.seed_base)
        values["desc_eng"] = result.text
        traces.append(("kor_to_eng", result.trace()))
    if "ad_copy_eng" in missing:
        result = copywriting.write_english_ad_copy(model, values["desc_eng"], seed=ctx.settings.seed_base)
        values["ad_copy_eng"] = result.text
        traces.append(("ad_copy_eng", result.trace()))
    if "ad_copy_kor" in missing:
        result = copywriting.write_short_korean_ad_copy(
            model, inputs.desc_kor, values["ad_copy_eng"], seed=ctx.settings.seed_base
        )
        values["ad_copy_kor"] = result.text
        traces.append(("ad_copy_kor", result.trace()))
    ctx.log(f"job {inputs.job_id}: wrote missing brief texts {missing} with {model.name}")
    with transaction(ctx.engine, ctx.origin) as conn:
        update_brief_texts(conn, inputs.job_id, values)
        for operation, trace in traces:
            trace_id = upsert_llm_trace(conn, inputs.job_id, operation, trace)
            upsert_ad_copy(conn, inputs.job_id, operation, values[_FIELD_OF[operation]], trace_id)
    return JobInputsRow(**{**inputs.__dict__, **values})


_FIELD_OF = {"kor_to_eng": "desc_eng", "ad_copy_eng": "ad_copy_eng", "ad_copy_kor": "ad_copy_kor"}
