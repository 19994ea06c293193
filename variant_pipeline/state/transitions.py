"""The transition rule: which stage a row's state asks to run next. Pure functions of the stage graph.

Everything is decided in pipeline order from the stage graph (``stages.py``), never by comparing
stage names as text (alphabetical order is not pipeline order: ``planner`` sorts after ``overlay``).
A job row at the last variant stage ``done`` is the rollup of its variants: its job-level stages
come next.
"""

from __future__ import annotations

from collections.abc import Iterable

from variant_pipeline import stages as stage_graph
from variant_pipeline.data.outbox import Event
from variant_pipeline.stages import Level
from variant_pipeline.state.origins import RECOVERY_ORIGIN_PREFIX, RUN_ORIGIN_PREFIX


def restart_stage(level: str, at: str, status: str) -> str | None:
    """The first unfinished stage of a row in state (at, status), on the row's own level."""
    if status in ("queued", "running", "failed"):
        return at if stage_graph.stage(at).level == level else None
    if level == "job" and at == stage_graph.LAST_VARIANT_STAGE:
        # The last variant stage done, on a job row, is the rollup: the job stages come next.
        # (next_stage stays within a level, so this must be said here.)
        return stage_graph.FIRST_JOB_STAGE
    following = stage_graph.next_stage(at)
    if following is None or following.level != level:
        return None
    return following.name


def start_stage_for(event: Event) -> str | None:
    """Which stage a state change asks to run next, on its row's level, or None.

    ``queued`` asks for its own stage (an external system queued it); ``done`` for the next stage
    of the same level. The last variant stage done for a job is the rollup: the job stages start.
    ``running`` and ``failed`` ask for nothing here (recovery is a separate concern).
    """
    if event.new_status not in ("queued", "done"):
        return None
    return restart_stage(event.level, event.new_stage, event.new_status)


def is_own_run_write(origin: str) -> bool:
    """Written by a pipeline run or the recovery sensor: progress that carries on by itself."""
    return origin.startswith((RUN_ORIGIN_PREFIX, RECOVERY_ORIGIN_PREFIX))


def is_request(event: Event) -> bool:
    """Whether an outbox event may ask for a run: a change made by someone else, or a job's rollup."""
    if event.level == Level.VARIANT and event.job_variants_id is None:
        return False
    # A job's rollup is written inside the transaction of its last variant's write, so it carries
    # that run's origin; it is still the signal for the job stages.
    rollup = event.level == Level.JOB and event.new_stage == stage_graph.LAST_VARIANT_STAGE
    return rollup or not is_own_run_write(event.origin)


def continuation_start(materialized_stage_names: Iterable[str]) -> str | None:
    """After a hand-started run: the stage after the furthest materialized one, on the same level."""
    names = [n for n in materialized_stage_names if n in stage_graph.STAGES_BY_NAME]
    if not names:
        return None
    furthest = max((stage_graph.stage(n) for n in names), key=lambda s: s.position)
    following = stage_graph.next_stage(furthest.name)
    return following.name if following else None


def stale_reason(level: str, at: str, status: str, *, retry_pending: bool, stage: str,
                 continues_attempts: bool) -> str | None:
    """Why a run the pipeline launched must not run ``stage`` on a row in state (at, status), or
    None when the row asks for exactly that stage.

    A launched run acts on the state it was launched for. A duplicate of it (a replayed tick, a
    second daemon, a recovery restart racing a slow run) arrives after the row has moved on; run
    anyway, it would redo finished work and move the row back. Runs a person starts never ask.
    """
    here = f"the {level} is at ({at}, {status})"
    if status == "running":
        return f"{here}: another run is working on it"
    if status == "failed":
        return f"{here}: only a retry or a hand run restarts it"
    wanted = restart_stage(level, at, status)
    if wanted != stage:
        return f"{here}, which asks for {wanted or 'no further stage'}, not {stage}"
    if retry_pending and not continues_attempts:
        return f"{here}, waiting for its automatic retry"
    return None
