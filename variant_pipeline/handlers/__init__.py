"""Running one stage for one partition: claim, work, write, done (or failed, with the reason).

This is the whole state protocol, without Dagster: the assets call ``execute_stage`` and add
only metadata. Every write carries the caller's origin (the Dagster run id) into the outbox.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from variant_pipeline import stages as stage_graph
from variant_pipeline.db import transaction
from variant_pipeline.handlers import job, variant
from variant_pipeline.handlers.base import HandlerContext, StageInputError, StageOutcome

Handler = Callable[[HandlerContext], StageOutcome]

HANDLERS: dict[str, Handler] = {
    "img_gen": variant.img_gen,
    "vlm_analyze": variant.vlm_analyze,
    "yolo_detect": variant.yolo_detect,
    "planner": variant.planner,
    "overlay": variant.overlay,
    "vlm_judge": variant.vlm_judge,
    "ocr_eval": variant.ocr_eval,
    "readability_eval": variant.readability_eval,
    "iou_eval": variant.iou_eval,
    "ad_copy_gen_kor": job.ad_copy_gen_kor,
    "instagram_feed_gen": job.instagram_feed_gen,
}
_unmatched = set(stage_graph.STAGE_NAMES) ^ set(HANDLERS)
if _unmatched:  # the stage graph and the handlers must name the same stages
    raise RuntimeError(f"stages without a handler (or handlers without a stage): {sorted(_unmatched)}")

MAX_ERROR_CHARS = 2000


class StageFailed(RuntimeError):
    """The stage failed; the reason is stored on the variant/job row as well."""

    def __init__(self, stage: str, partition_key: str, reason: str) -> None:
        super().__init__(f"{stage} failed for {partition_key}: {reason}")
        self.stage = stage
        self.partition_key = partition_key
        self.reason = reason


def _table(level: str) -> tuple[str, str]:
    return ("jobs_variants", "job_variants_id") if level == "variant" else ("jobs", "job_id")


def _set(conn: sa.Connection, level: str, key: str, step: str, status: str, error: str | None) -> int:
    table, id_column = _table(level)
    last = stage_graph.LAST_VARIANT_STAGE if level == "variant" else stage_graph.LAST_JOB_STAGE
    finished = status == "failed" or (status == "done" and step == last)
    return conn.execute(
        sa.text(
            f"""UPDATE {table} SET current_step = :step, status = :status, error = :error,
                       started_at = CASE WHEN :status = 'running' THEN COALESCE(started_at, now()) ELSE started_at END,
                       finished_at = CASE WHEN :finished THEN now() WHEN :status = 'running' THEN NULL
                                          ELSE finished_at END
                 WHERE {id_column} = CAST(:key AS uuid)"""
        ),
        {"step": step, "status": status, "error": error, "key": key, "finished": finished},
    ).rowcount


def execute_stage(stage_name: str, ctx: HandlerContext) -> StageOutcome:
    stage = stage_graph.stage(stage_name)
    key = ctx.partition_key
    try:
        with transaction(ctx.engine, ctx.origin) as conn:
            if _set(conn, stage.level, key, stage.name, "running", None) != 1:
                raise StageInputError(f"{stage.level} {key} does not exist")
    except StageInputError as exc:
        raise StageFailed(stage.name, key, str(exc)) from exc
    except (ValueError, sa.exc.DataError) as exc:  # e.g. a partition key that is not a UUID
        raise StageFailed(stage.name, key, f"bad partition key: {exc}") from exc
    try:
        outcome = HANDLERS[stage.name](ctx)
        with transaction(ctx.engine, ctx.origin) as conn:
            outcome.write(conn)
            _set(conn, stage.level, key, stage.name, "done", None)
        return outcome
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".replace("\x00", "\ufffd")[:MAX_ERROR_CHARS]
        try:
            with transaction(ctx.engine, ctx.origin) as conn:
                _set(conn, stage.level, key, stage.name, "failed", reason)
        except Exception as mark_exc:  # the database itself may be what failed
            ctx.log(f"could not record the failure of {stage.name} for {key}: {mark_exc}")
        raise StageFailed(stage.name, key, reason) from exc


__all__ = ["HANDLERS", "HandlerContext", "StageFailed", "StageInputError", "StageOutcome", "execute_stage"]
