"""Fault drills: make a stage fail, hang, stall or kill its worker on purpose (``VP_FAULTS``).

For rehearsing recovery on a real deployment, and for the fault tests, which start the real
daemon and need a stage to misbehave inside its own run worker. Unset (the default), nothing
happens. The spec is a ``;``-separated list of ``STAGE:ACTION[:CONDITION,...]``:

- actions: ``raise`` (the stage raises), ``hang`` (it never returns: its timeout ends it),
  ``sleep=SECONDS`` (it pauses, then does its work), ``kill`` (the worker SIGKILLs itself);
- conditions: ``attempt=N`` (only that attempt), ``variant=N`` (only the variant of that
  creation order).

Example: ``VP_FAULTS="vlm_analyze:raise:variant=2;yolo_detect:sleep=30:attempt=1"``.
"""

from __future__ import annotations

import math
import os
import re
import signal
import threading
import time
from dataclasses import dataclass

from variant_pipeline import stages as stage_graph

ACTIONS = ("raise", "hang", "sleep", "kill")


class InjectedFault(RuntimeError):
    """Raised by a ``raise`` fault drill."""


@dataclass(frozen=True)
class Fault:
    stage: str
    action: str
    seconds: float = 0.0
    attempt: int | None = None
    variant: int | None = None

    def applies(self, stage: str, attempt: int, creation_order: int | None) -> bool:
        return (self.stage == stage
                and (self.attempt is None or self.attempt == attempt)
                and (self.variant is None or self.variant == creation_order))


def parse_faults(spec: str | None) -> tuple[Fault, ...]:
    faults = []
    for item in (spec or "").split(";"):
        item = item.strip()
        if not item:
            continue
        parts = item.split(":")
        if len(parts) < 2:
            raise ValueError(f"VP_FAULTS entry {item!r}: expected STAGE:ACTION[:CONDITION,...]")
        stage, action_text = parts[0].strip(), parts[1].strip()
        if stage not in stage_graph.STAGES_BY_NAME:
            raise ValueError(f"VP_FAULTS entry {item!r}: unknown stage {stage!r}")
        action, _, value = action_text.partition("=")
        if action not in ACTIONS:
            raise ValueError(f"VP_FAULTS entry {item!r}: action must be one of {', '.join(ACTIONS)}")
        if (action == "sleep") != bool(value):
            raise ValueError(f"VP_FAULTS entry {item!r}: give sleep=SECONDS, and a value for sleep only")
        seconds = _seconds(item, value) if value else 0.0
        conditions: dict[str, int] = {}
        for condition in ",".join(parts[2:]).split(","):
            if not condition.strip():
                continue
            name, _, number = condition.strip().partition("=")
            if name not in ("attempt", "variant") or not re.fullmatch(r"[0-9]+", number):
                raise ValueError(f"VP_FAULTS entry {item!r}: condition {condition!r} must be attempt=N or variant=N")
            conditions[name] = int(number)
        faults.append(Fault(stage, action, seconds, conditions.get("attempt"), conditions.get("variant")))
    return tuple(faults)


def _seconds(item: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"VP_FAULTS entry {item!r}: sleep={value} is not a number of seconds (0 or more)")
    return seconds


def inject(faults: tuple[Fault, ...], stage: str, attempt: int, creation_order: int | None) -> None:
    for fault in faults:
        if not fault.applies(stage, attempt, creation_order):
            continue
        if fault.action == "raise":
            raise InjectedFault(f"fault drill: {stage} raised on attempt {attempt}")
        if fault.action == "sleep":
            time.sleep(fault.seconds)
        elif fault.action == "hang":
            threading.Event().wait()
        elif fault.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
