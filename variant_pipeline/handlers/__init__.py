"""Stage handlers, one per stage in the stage graph: read the inputs, call the work, return the writes.

``execute_stage`` runs a stage's handler as one recorded attempt; the protocol around it (lock,
claim, fence, retries) is the state machine's, in ``variant_pipeline/state/attempts.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from variant_pipeline import stages as stage_graph
from variant_pipeline.handlers import (
    ad_copy_gen_kor,
    img_gen,
    instagram_feed_gen,
    iou_eval,
    ocr_eval,
    overlay,
    planner,
    readability_eval,
    vlm_analyze,
    vlm_judge,
    yolo_detect,
)
from variant_pipeline.handlers.base import HandlerContext, StageOutcome
from variant_pipeline.state import attempts

Handler = Callable[[HandlerContext], StageOutcome]

# One module per stage, named after it (handlers/<stage>.py), each with ``run``.
HANDLERS: dict[str, Handler] = {
    "img_gen": img_gen.run,
    "vlm_analyze": vlm_analyze.run,
    "yolo_detect": yolo_detect.run,
    "planner": planner.run,
    "overlay": overlay.run,
    "vlm_judge": vlm_judge.run,
    "ocr_eval": ocr_eval.run,
    "readability_eval": readability_eval.run,
    "iou_eval": iou_eval.run,
    "ad_copy_gen_kor": ad_copy_gen_kor.run,
    "instagram_feed_gen": instagram_feed_gen.run,
}
_unmatched = set(stage_graph.STAGE_NAMES) ^ set(HANDLERS)
if _unmatched:  # the stage graph and the handlers must name the same stages
    raise RuntimeError(f"stages without a handler (or handlers without a stage): {sorted(_unmatched)}")


def execute_stage(stage_name: str, ctx: HandlerContext) -> StageOutcome:
    """Run ``stage_name``'s handler for ``ctx``'s partition as one recorded attempt (see state/attempts.py)."""
    return attempts.execute_stage(stage_name, ctx, HANDLERS[stage_name])


__all__ = ["HANDLERS", "HandlerContext", "StageOutcome", "execute_stage"]
