"""The one declaration of the stage graph.

Everything that needs to know the stages (the Dagster assets, the next-stage rule, the SQL
stage names stored in ``pipeline_stages``, the docs) derives from ``STAGES``. Adding a stage
means adding one entry here plus the stage's own work function and asset glue.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    """What a stage's partition is: one variant (``job_variants_id``) or one job (``job_id``)."""

    VARIANT = "variant"
    JOB = "job"


class Status(StrEnum):
    """The ``status`` half of a row's ``(current_step, status)``; the schema's CHECK lists these."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Outcome(StrEnum):
    """How one ``stage_attempts`` row ended (``running`` while it has not)."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    LOST = "lost"  # its worker went away mid-stage
    SUPERSEDED = "superseded"  # another attempt took the partition; its results were discarded
    SKIPPED = "skipped"  # a stale run found the stage not asked for: no attempt at all


@dataclass(frozen=True)
class Stage:
    name: str
    level: Level
    model: str | None  # a model family in variant_pipeline.models.registry (its resource key); None: no model
    description: str

    @property
    def position(self) -> int:
        return STAGE_NAMES.index(self.name)


STAGES: tuple[Stage, ...] = (
    Stage("img_gen", Level.VARIANT, "image_generator",
          "Background image for the variant (inpainting around the product photo, or text-to-image)."),
    Stage("vlm_analyze", Level.VARIANT, "vlm",
          "Vision-language analysis of the image, ad-copy validation and a font recommendation."),
    Stage("yolo_detect", Level.VARIANT, "detector",
          "Object detection; boxes of forbidden classes become regions the text must avoid."),
    Stage("planner", Level.VARIANT, None,
          "Scored text-placement proposals that avoid the forbidden regions."),
    Stage("overlay", Level.VARIANT, None,
          "Chosen placement with the short Korean ad copy rendered onto the image."),
    Stage("vlm_judge", Level.VARIANT, "vlm",
          "Vision-language verdict on the overlaid ad against the brief."),
    Stage("ocr_eval", Level.VARIANT, "ocr",
          "OCR read-back of the rendered text and its accuracy."),
    Stage("readability_eval", Level.VARIANT, None,
          "WCAG contrast between the drawn text colour and the background under the text."),
    Stage("iou_eval", Level.VARIANT, None,
          "Overlap of the placement and text boxes with forbidden detections."),
    Stage("ad_copy_gen_kor", Level.JOB, "text_model",
          "Korean ad copy for the job, translated from the English ad copy."),
    Stage("instagram_feed_gen", Level.JOB, "text_model",
          "Instagram feed post and hashtags for the job."),
)

# The brief (the job's texts that any stage may be the first to need: handlers/brief.py) is copy,
# written by the family that writes the job's copy. Every stage's asset holds its resource.
BRIEF_MODEL = "text_model"

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
STAGES_BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
VARIANT_STAGES: tuple[Stage, ...] = tuple(s for s in STAGES if s.level == Level.VARIANT)
JOB_STAGES: tuple[Stage, ...] = tuple(s for s in STAGES if s.level == Level.JOB)
FIRST_VARIANT_STAGE = VARIANT_STAGES[0].name
LAST_VARIANT_STAGE = VARIANT_STAGES[-1].name
FIRST_JOB_STAGE = JOB_STAGES[0].name
LAST_JOB_STAGE = JOB_STAGES[-1].name


def stage(name: str) -> Stage:
    try:
        return STAGES_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; known stages: {', '.join(STAGE_NAMES)}") from None


def next_stage(name: str) -> Stage | None:
    """The stage that follows ``name`` at the same level, or None at the end of that level."""
    current = stage(name)
    same_level = [s for s in STAGES if s.level == current.level]
    i = same_level.index(current)
    return same_level[i + 1] if i + 1 < len(same_level) else None


def stages_from(name: str) -> tuple[Stage, ...]:
    """``name`` and every later stage of the same level, in pipeline order."""
    current = stage(name)
    return tuple(s for s in STAGES if s.level == current.level and s.position >= current.position)
