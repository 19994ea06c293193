"""The soak's schedule: every workload action and fault, with its time, drawn up front from one
``random.Random(seed)``. The same seed and settings give the same schedule (the soak writes it
to its JSON); what each action finds to act on at run time (which worker to kill, which variant
to re-materialize) is picked with ``random.Random(f"{seed}:{action id}")`` from what exists then.

Pure: no database, no Dagster, no processes.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any

FAULT_KINDS_LOCAL = ("kill_worker", "kill_daemon", "kill_code_server", "pg_restart", "stop_worker", "second_daemon")
FAULT_KINDS_RAY = (*FAULT_KINDS_LOCAL, "kill_replica", "serve_restart")
FAULT_KINDS_S3 = ("s3_restart",)  # with --asset-root s3: the object store dies and comes back
# How long each fault lasts (s): the daemon stays down, the worker stopped, the second daemon up...
FAULT_DURATIONS = {"kill_daemon": (5, 40), "stop_worker": (20, 90), "second_daemon": (30, 120),
                   "pg_restart": (1, 5), "serve_restart": (0, 0), "s3_restart": (1, 10)}

# Arrivals that create a job (Poisson at --jobs-per-min), by weight.
JOB_KINDS = {"submit": 6.0, "producer_job": 1.5, "producer_img_done": 1.0, "bad_rows": 1.5}
# Other operations people and systems run meanwhile (Poisson at OPS_PER_JOB x the job rate).
OP_KINDS = {"results": 3.0, "prune": 2.0, "retry": 2.0, "bad_cli": 2.0, "hand_cli": 1.0, "hand_graphql": 1.0,
            "backfill": 0.7}
OPS_PER_JOB = 1.5

PHOTO_MODES = ("none", "none", "rgb", "cmyk", "palette", "exif", "small", "large")
BAD_CLI_CASES = ("corrupt_photo", "text_as_photo", "tiny_photo", "zero_variants", "too_many_variants",
                 "empty_description", "long_kor_copy", "control_char", "unknown_tenant", "missing_file",
                 "malformed_retry_id")
BAD_ROW_CASES = ("corrupt_photo", "tiny_photo", "long_copy", "missing_image_sibling")
HAND_ASSETS = ("overlay", "vlm_judge", "readability_eval")
DESCRIPTIONS = ("얼큰한 부대찌개 2인분", "갓 구운 크루아상과 따뜻한 카페라떼 세트", "제주 감귤 5kg 한정 특가",
                "수제 초코쿠키 선물 세트", "무선 이어폰 노이즈 캔슬링", "여름 린넨 셔츠 3color")
KOR_COPY = ("따뜻한 라떼 한 잔", "오늘만 50% 할인 ☕🔥", "신선함 그대로", None, None)


@dataclass
class Action:
    t: float  # seconds after the workload starts
    id: int
    kind: str  # a workload kind, a fault kind, or "fault_end"
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def is_fault(self) -> bool:
        return self.kind in FAULT_KINDS_RAY or self.kind in FAULT_KINDS_S3

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "t": round(self.t, 2)}


def parse_duration(text: str) -> float:
    """``90s``, ``3m``, ``1h30m``, ``60m`` or plain seconds -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smh])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"bad duration {text!r}: use e.g. 90s, 3m, 60m, 1h30m")
    return sum(float(n) * {"s": 1, "m": 60, "h": 3600}[u] for n, u in parts)


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _cycle_then_weighted(rng: random.Random, weights: dict[str, float]):
    """Every kind once (in a seeded order), then by weight: a short soak still covers them all."""
    first = list(weights)
    rng.shuffle(first)
    yield from first
    while True:
        yield _weighted(rng, weights)


def _job_params(rng: random.Random, kind: str) -> dict[str, Any]:
    if kind == "submit":
        return {"variants": rng.randint(1, 4), "photo": rng.choice(PHOTO_MODES),
                "description": rng.choice(DESCRIPTIONS), "ad_copy_kor": rng.choice(KOR_COPY),
                "photo_seed": rng.randrange(1 << 30)}
    if kind == "producer_job":
        expected = rng.randint(2, 3)
        return {"expected": expected, "first": rng.randint(1, expected - 1), "description": rng.choice(DESCRIPTIONS)}
    if kind == "producer_img_done":
        return {"variants": rng.randint(1, 2), "description": rng.choice(DESCRIPTIONS),
                "photo_seed": rng.randrange(1 << 30)}
    if kind == "bad_rows":
        return {"case": rng.choice(BAD_ROW_CASES), "photo_seed": rng.randrange(1 << 30)}
    raise ValueError(kind)


def _op_params(rng: random.Random, kind: str) -> dict[str, Any]:
    if kind == "bad_cli":
        return {"case": rng.choice(BAD_CLI_CASES)}
    if kind in ("hand_cli", "hand_graphql"):
        return {"asset": rng.choice(HAND_ASSETS)}
    if kind == "backfill":
        return {"asset": rng.choice(HAND_ASSETS), "partitions": rng.randint(2, 3)}
    if kind == "prune":
        return {"older_than": "2m"}
    return {}


def build_schedule(*, seed: int, duration_s: float, backend: str, jobs_per_min: float,
                   faults_per_min: float, warmup_s: float = 20.0, asset_root: str = "disk") -> list[Action]:
    """Every action of the soak, in time order; a fault kind never overlaps itself, and every fault
    ends before ``duration_s``."""
    rng = random.Random(seed)
    actions: list[Action] = []

    def add(t: float, kind: str, params: dict[str, Any]) -> Action:
        action = Action(t=t, id=0, kind=kind, params=params)
        actions.append(action)
        return action

    # Jobs: Poisson arrivals; the first one at once so the pipeline has work before the first fault.
    if jobs_per_min > 0:
        kinds = _cycle_then_weighted(rng, JOB_KINDS)
        t = 0.0
        while t < duration_s:
            kind = next(kinds)
            action = add(t, kind, _job_params(rng, kind))
            if kind == "producer_job":  # the upstream system adds the job's other variants later
                later = min(t + rng.uniform(5, 30), duration_s - 1)
                add(max(later, t + 1), "producer_variants", {"of": action})
            t += rng.expovariate(jobs_per_min / 60.0)
    # Operations: Poisson as well.
    ops_rate = max(jobs_per_min, 0.5) * OPS_PER_JOB
    kinds = _cycle_then_weighted(rng, OP_KINDS)
    t = rng.expovariate(ops_rate / 60.0)
    while t < duration_s:
        kind = next(kinds)
        add(t, kind, _op_params(rng, kind))
        t += rng.expovariate(ops_rate / 60.0)
    # Faults: Poisson arrivals, each kind in turn (a seeded order). Faults of different kinds
    # overlap, as they do unattended (a daemon killed while the database restarts); a kind never
    # overlaps itself (one second daemon, one stopped worker at a time).
    if faults_per_min > 0:
        fault_kinds = list(FAULT_KINDS_RAY if backend == "ray" else FAULT_KINDS_LOCAL)
        if asset_root == "s3":
            fault_kinds += FAULT_KINDS_S3
        rng.shuffle(fault_kinds)
        busy_until = dict.fromkeys(fault_kinds, 0.0)
        t = warmup_s + rng.expovariate(faults_per_min / 60.0) * 0.5
        n = 0
        while True:
            kind = fault_kinds[n % len(fault_kinds)]
            low, high = FAULT_DURATIONS.get(kind, (0, 0))
            length = rng.uniform(low, high) if high else 0.0
            start = max(t, busy_until[kind] + 1.0)
            if start + length > duration_s - 5:
                break
            fault = add(start, kind, {"duration_s": round(length, 1)} if high else {})
            if high:
                add(start + length, "fault_end", {"of": fault})
            busy_until[kind] = start + length
            n += 1
            t += rng.expovariate(faults_per_min / 60.0)
    actions.sort(key=lambda a: (a.t, a.kind))
    for i, action in enumerate(actions, start=1):
        action.id = i
    for action in actions:  # references by id, now that ids exist
        if isinstance(action.params.get("of"), Action):
            action.params["of"] = action.params["of"].id
    return actions


def summarize(actions: list[Action]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in actions:
        counts[a.kind] = counts.get(a.kind, 0) + 1
    return dict(sorted(counts.items()))
