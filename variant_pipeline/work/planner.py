"""planner: scored text-placement proposals that avoid forbidden regions.

Same job as the original's ``propose_overlay_positions``, with its defects fixed:

- every candidate, the fixed rule boxes included, must meet the minimum size (the original's
  rule_left/rule_right are 15 % wide, which clipped a 28-character Korean copy);
- every valid grid size is used (an indentation bug kept only the last one);
- the "largest free area" is a real largest empty rectangle at the minimum size, not four
  bands around the bounding box of all forbidden regions;
- no random ids or sampling: the same inputs always give the same proposals, ids included;
- when nothing satisfies the constraints the result says so (``feasible=False`` and a reason)
  instead of quietly returning the least-bad box.

The caller keys the result to the variant's own image (the original keyed proposals to the job's
upload, so the overlay never found them); a forbidden mask whose size
differs from the image is rejected, since it must belong to another image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from variant_pipeline.work.iou import box_iou, clamp_box
from variant_pipeline.work.types import Detection, NormBox

# The original's fixed candidates (box, prior score); kept only if they meet the minimum size.
RULES: tuple[tuple[str, NormBox, float], ...] = (
    ("rule_top", NormBox(0.1, 0.05, 0.8, 0.18), 0.9),
    ("rule_bottom", NormBox(0.1, 0.82, 0.8, 0.18), 0.8),
    ("rule_left", NormBox(0.05, 0.1, 0.15, 0.8), 0.7),
    ("rule_right", NormBox(0.85, 0.1, 0.15, 0.8), 0.7),
    ("rule_center", NormBox(0.2, 0.1, 0.6, 0.2), 0.85),
)
GRID_SIZES: tuple[tuple[float, float], ...] = (
    (0.8, 0.18), (0.6, 0.15), (0.5, 0.12), (0.4, 0.15), (0.7, 0.2),
    (0.3, 0.12), (0.9, 0.15), (0.65, 0.16), (0.45, 0.14),
)
FREE_AREA_SOURCE = "max_size_free_area"


@dataclass(frozen=True)
class PlannerParams:
    min_overlay_width: float = 0.5
    min_overlay_height: float = 0.12
    max_proposals: int = 10
    max_forbidden_iou: float = 0.05
    mask_threshold: int = 128  # mask pixels above this are forbidden
    free_area_margin: float = 0.02  # gap kept between the free-area proposal and forbidden pixels
    free_area_grid: int = 64  # cells per side for the largest-empty-rectangle search
    duplicate_iou: float = 0.6  # proposals overlapping a better one more than this are dropped

    def __post_init__(self) -> None:
        if not (0 < self.min_overlay_width <= 1 and 0 < self.min_overlay_height <= 1):
            raise ValueError("min_overlay_width/height must be in (0, 1]")
        if self.max_proposals < 1:
            raise ValueError("max_proposals must be at least 1")
        if not 0 <= self.max_forbidden_iou <= 1:
            raise ValueError("max_forbidden_iou must be in [0, 1]")


@dataclass(frozen=True)
class Proposal:
    proposal_id: str  # deterministic: the source name (unique within one result)
    source: str
    box: NormBox
    score: float  # prior score x (1 - occlusion_iou)
    occlusion_iou: float  # max of the two below
    iou_boxes: float  # max IoU against the forbidden detection boxes
    iou_mask: float  # pixel IoU against the forbidden mask

    def to_dict(self) -> dict[str, Any]:
        return {
            "proposal_id": self.proposal_id, "source": self.source, "box": self.box.as_list(),
            "score": self.score, "occlusion_iou": self.occlusion_iou,
            "iou_boxes": self.iou_boxes, "iou_mask": self.iou_mask,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Proposal:
        return cls(
            proposal_id=str(d["proposal_id"]), source=str(d["source"]),
            box=NormBox(*[float(v) for v in d["box"]]), score=float(d["score"]),
            occlusion_iou=float(d["occlusion_iou"]), iou_boxes=float(d["iou_boxes"]),
            iou_mask=float(d["iou_mask"]),
        )


@dataclass(frozen=True)
class ForbiddenPosition:
    """Where the forbidden content sits, for the overlay's group adjustments."""

    cx: float
    cy: float
    is_center_x: bool
    is_top_y: bool
    is_bottom_y: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PlannerResult:
    width: int
    height: int
    proposals: tuple[Proposal, ...]  # best first; with feasible=False, the least-bad candidate
    feasible: bool
    reason: str | None  # why not feasible (None when feasible)
    forbidden_boxes: tuple[NormBox, ...]
    forbidden_extent: NormBox | None  # bounding box of all forbidden boxes
    forbidden_position: ForbiddenPosition | None
    mask_used: bool
    candidate_count: int
    rejected_min_size: tuple[str, ...]  # candidates dropped for being below the minimum size
    rejected_occlusion: int  # candidates dropped for overlapping forbidden regions
    params: PlannerParams = field(default_factory=PlannerParams)

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width, "height": self.height,
            "proposals": [p.to_dict() for p in self.proposals],
            "feasible": self.feasible, "reason": self.reason,
            "forbidden_boxes": [b.as_list() for b in self.forbidden_boxes],
            "forbidden": self.forbidden_extent.as_list() if self.forbidden_extent else None,
            "forbidden_position": self.forbidden_position.to_dict() if self.forbidden_position else None,
            "mask_used": self.mask_used, "candidate_count": self.candidate_count,
            "rejected_min_size": list(self.rejected_min_size),
            "rejected_occlusion": self.rejected_occlusion,
            "params": dict(self.params.__dict__),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlannerResult:
        fp = d.get("forbidden_position")
        fe = d.get("forbidden")
        return cls(
            width=int(d["width"]), height=int(d["height"]),
            proposals=tuple(Proposal.from_dict(p) for p in d["proposals"]),
            feasible=bool(d["feasible"]), reason=d.get("reason"),
            forbidden_boxes=tuple(NormBox(*b) for b in d.get("forbidden_boxes", [])),
            forbidden_extent=NormBox(*fe) if fe else None,
            forbidden_position=ForbiddenPosition(**fp) if fp else None,
            mask_used=bool(d.get("mask_used", False)),
            candidate_count=int(d.get("candidate_count", 0)),
            rejected_min_size=tuple(d.get("rejected_min_size", [])),
            rejected_occlusion=int(d.get("rejected_occlusion", 0)),
            params=PlannerParams(**d["params"]) if d.get("params") else PlannerParams(),
        )


@dataclass(frozen=True)
class _Candidate:
    source: str
    box: NormBox
    prior: float


def _meets_min(box: NormBox, p: PlannerParams) -> bool:
    eps = 1e-9  # grid sizes equal to the minimum must pass despite float noise
    return box.w + eps >= p.min_overlay_width and box.h + eps >= p.min_overlay_height


def _grid_candidates(
    forbidden: Sequence[NormBox], extent: NormBox | None, p: PlannerParams
) -> list[_Candidate]:
    sizes = [s for s in GRID_SIZES if s[0] >= p.min_overlay_width and s[1] >= p.min_overlay_height]
    # The minimum itself is always tried, so a strict minimum never leaves the grid empty.
    if (p.min_overlay_width, p.min_overlay_height) not in sizes:
        sizes.append((p.min_overlay_width, p.min_overlay_height))
    n = len(sizes)
    out: list[_Candidate] = []
    for idx, (w, h) in enumerate(sizes):
        positions: list[tuple[str, float, float]] = [
            ("top_left", 0.0, 0.0), ("top_center", (1 - w) / 2, 0.0), ("top_right", 1 - w, 0.0),
            ("bottom_left", 0.0, 1 - h), ("bottom_center", (1 - w) / 2, 1 - h),
            ("bottom_right", 1 - w, 1 - h),
        ]
        if extent is not None:
            fy_min, fy_max = extent.y, extent.y + extent.h
            if fy_min > h + 0.1:
                positions.append(("mid_top", (1 - w) / 2, (fy_min - h) / 2))
            if fy_max + h < 0.9:
                positions.append(("mid_bottom", (1 - w) / 2, min(fy_max + 0.05, 1 - h)))
        if h > 0.3:
            positions += [("left_middle", 0.0, (1 - h) / 2), ("right_middle", 1 - w, (1 - h) / 2)]
        for name, x, y in positions:
            # The original's score: prefer top/left, larger boxes, and earlier sizes in the list.
            prior = 1 - (0.3 * y + 0.1 * x) + (0.4 * w + 0.6 * h) * 0.3 + (n - idx) * 0.05
            out.append(_Candidate(f"grid_{name}_w{round(w * 100)}_h{round(h * 100)}",
                                  NormBox(x, y, w, h), prior))
    return out


def _blocked_cells(
    forbidden: Sequence[NormBox], mask: np.ndarray | None, p: PlannerParams
) -> np.ndarray:
    """(G, G) bool grid; a cell is blocked if any forbidden pixel (dilated by the margin) touches it."""
    g = p.free_area_grid
    blocked = np.zeros((g, g), dtype=bool)
    m = p.free_area_margin
    for b in forbidden:
        x1, y1, x2, y2 = b.x - m, b.y - m, b.x + b.w + m, b.y + b.h + m
        c1, c2 = max(0, math.floor(x1 * g)), min(g, math.ceil(x2 * g))
        r1, r2 = max(0, math.floor(y1 * g)), min(g, math.ceil(y2 * g))
        blocked[r1:r2, c1:c2] = True
    if mask is not None and mask.any():
        h, w = mask.shape
        rows = np.minimum((np.arange(h) * g) // h, g - 1)
        cols = np.minimum((np.arange(w) * g) // w, g - 1)
        ys, xs = np.nonzero(mask)
        cells = np.zeros((g, g), dtype=bool)
        cells[rows[ys], cols[xs]] = True
        d = math.ceil(m * g)
        if d:
            grown = cells.copy()
            for dy in range(-d, d + 1):
                for dx in range(-d, d + 1):
                    grown |= np.roll(np.roll(cells, dy, 0), dx, 1) & _shift_valid(g, dy, dx)
            cells = grown
        blocked |= cells
    return blocked


def _shift_valid(g: int, dy: int, dx: int) -> np.ndarray:
    """Cells that np.roll did not wrap around, for a (dy, dx) shift."""
    valid = np.ones((g, g), dtype=bool)
    if dy > 0:
        valid[:dy, :] = False
    elif dy < 0:
        valid[dy:, :] = False
    if dx > 0:
        valid[:, :dx] = False
    elif dx < 0:
        valid[:, dx:] = False
    return valid


def largest_free_rectangle(blocked: np.ndarray, min_w: float, min_h: float) -> NormBox | None:
    """Largest all-free axis-aligned rectangle of cells with at least the minimum size.

    Ties go to the wider, then the upper, then the left-most rectangle, so the answer is stable.
    """
    g_rows, g_cols = blocked.shape
    # prefix[r, c] = blocked cells in row r before column c
    prefix = np.concatenate([np.zeros((g_rows, 1), dtype=np.int32),
                             np.cumsum(blocked, axis=1, dtype=np.int32)], axis=1)
    min_cols = math.ceil(min_w * g_cols - 1e-9)
    min_rows = math.ceil(min_h * g_rows - 1e-9)
    best: tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None = None
    for c0 in range(g_cols):
        for c1 in range(c0 + max(1, min_cols), g_cols + 1):
            free_rows = (prefix[:, c1] - prefix[:, c0]) == 0
            if not free_rows.any():
                break  # wider spans starting at c0 are blocked in every row too
            run_start, r = -1, 0
            for r in range(g_rows + 1):
                free = r < g_rows and free_rows[r]
                if free and run_start < 0:
                    run_start = r
                elif not free and run_start >= 0:
                    rows = r - run_start
                    if rows >= min_rows:
                        cols = c1 - c0
                        key = (rows * cols, cols, -run_start, -c0)
                        if best is None or key > best[0]:
                            best = (key, (c0, run_start, c1, r))
                    run_start = -1
    if best is None:
        return None
    c0, r0, c1, r1 = best[1]
    return NormBox(c0 / g_cols, r0 / g_rows, (c1 - c0) / g_cols, (r1 - r0) / g_rows)


def _mask_iou(box: NormBox, mask: np.ndarray | None, mask_area: int) -> float:
    """Pixel IoU between the proposal rectangle and the forbidden mask: |P∩M| / |P∪M|."""
    if mask is None or mask_area == 0:
        return 0.0
    h, w = mask.shape
    x1, y1, x2, y2 = box.to_px(w, h)
    inter = int(mask[y1:y2, x1:x2].sum())
    union = (x2 - x1) * (y2 - y1) + mask_area - inter
    return inter / union if union > 0 else 0.0


def _forbidden_position(boxes: Sequence[NormBox]) -> ForbiddenPosition | None:
    if not boxes:
        return None
    cx = sum(b.x + b.w / 2 for b in boxes) / len(boxes)
    cy = sum(b.y + b.h / 2 for b in boxes) / len(boxes)
    return ForbiddenPosition(cx=cx, cy=cy, is_center_x=0.3 <= cx <= 0.7,
                             is_top_y=cy < 0.5, is_bottom_y=cy > 0.5)


def _extent(boxes: Sequence[NormBox]) -> NormBox | None:
    if not boxes:
        return None
    x1 = min(b.x for b in boxes)
    y1 = min(b.y for b in boxes)
    x2 = max(b.x + b.w for b in boxes)
    y2 = max(b.y + b.h for b in boxes)
    return NormBox(x1, y1, x2 - x1, y2 - y1)


def plan_placements(
    width: int,
    height: int,
    detections: Sequence[Detection],
    forbidden_mask: np.ndarray | None,
    params: PlannerParams | None = None,
) -> PlannerResult:
    """Propose where the overlay text may go on a ``width`` x ``height`` variant image.

    ``detections``: the variant's detections; only ``forbidden`` ones are avoided.
    ``forbidden_mask``: (height, width) array, values above ``mask_threshold`` (or True) are
    forbidden; it is usually the detector's box mask, but a segmentation mask works as well.
    """
    p = params or PlannerParams()
    if width <= 0 or height <= 0:
        raise ValueError(f"bad image size {width}x{height}")
    mask: np.ndarray | None = None
    if forbidden_mask is not None:
        arr = np.asarray(forbidden_mask)
        if arr.ndim == 3:
            arr = arr.max(axis=2)
        if arr.shape != (height, width):
            raise ValueError(
                f"forbidden mask is {arr.shape[1]}x{arr.shape[0]} but the image is {width}x{height}: "
                "the mask must come from this variant's own image"
            )
        mask = arr if arr.dtype == bool else arr > p.mask_threshold
    mask_area = int(mask.sum()) if mask is not None else 0

    forbidden = tuple(
        b for b in (clamp_box(d.box) for d in detections if d.forbidden) if b.area > 0
    )
    extent = _extent(forbidden)
    has_forbidden = bool(forbidden) or mask_area > 0

    # 1. Candidates; everything below the minimum size is dropped, rules included.
    raw: list[_Candidate] = [_Candidate(n, b, s) for n, b, s in RULES]
    raw += _grid_candidates(forbidden, extent, p)
    free = largest_free_rectangle(
        _blocked_cells(forbidden, mask, p), p.min_overlay_width, p.min_overlay_height
    ) if has_forbidden else NormBox(0.0, 0.0, 1.0, 1.0)
    if free is not None:
        raw.insert(0, _Candidate(FREE_AREA_SOURCE, free, 1.0))
    rejected_min = tuple(c.source for c in raw if not _meets_min(c.box, p))
    candidates = [c for c in raw if _meets_min(c.box, p)]

    # 2. Occlusion against the boxes and the mask; keep those within the limit.
    scored: list[Proposal] = []
    for c in candidates:
        iou_b = max((box_iou(c.box, f) for f in forbidden), default=0.0)
        iou_m = _mask_iou(c.box, mask, mask_area)
        occ = max(iou_b, iou_m)
        scored.append(Proposal(c.source, c.source, c.box, c.prior * (1 - occ), occ, iou_b, iou_m))
    order = sorted(scored, key=lambda q: (-q.score, q.source))
    kept = [q for q in order if q.occlusion_iou <= p.max_forbidden_iou]
    rejected_occ = len(scored) - len(kept)

    common = dict(
        width=width, height=height, forbidden_boxes=forbidden, forbidden_extent=extent,
        forbidden_position=_forbidden_position(forbidden), mask_used=mask is not None,
        candidate_count=len(raw), rejected_min_size=rejected_min, rejected_occlusion=rejected_occ,
        params=p,
    )
    if not kept:
        least = min(scored, key=lambda q: (q.occlusion_iou, -q.score, q.source))
        return PlannerResult(
            proposals=(least,), feasible=False,
            reason=(
                f"no candidate of at least {p.min_overlay_width:.2f}x{p.min_overlay_height:.2f} "
                f"overlaps the forbidden regions by IoU <= {p.max_forbidden_iou}; "
                f"least occluded is {least.source} with IoU {least.occlusion_iou:.3f}"
            ),
            **common,  # type: ignore[arg-type]
        )

    # 3. De-duplicate: drop a proposal that mostly covers a better one (greedy, in score order);
    # the free-area proposal is always kept since it is the one place long text fits.
    chosen: list[Proposal] = [q for q in kept if q.source == FREE_AREA_SOURCE]
    for q in kept:
        if len(chosen) >= p.max_proposals:
            break
        if q in chosen:
            continue
        if all(box_iou(q.box, c.box) <= p.duplicate_iou for c in chosen):
            chosen.append(q)
    chosen.sort(key=lambda q: (-q.score, q.source))
    return PlannerResult(proposals=tuple(chosen), feasible=True, reason=None, **common)  # type: ignore[arg-type]


_PALETTE = ((0, 160, 255), (0, 200, 80), (255, 170, 0), (200, 0, 255), (0, 220, 220),
            (255, 90, 160), (120, 120, 255), (180, 220, 0), (255, 255, 255), (100, 60, 0))


def draw_plan(image: Image.Image, result: PlannerResult,
              forbidden_mask: np.ndarray | None = None) -> Image.Image:
    """The image with forbidden regions in translucent red and each proposal outlined and labelled.

    Meant for the Dagster UI thumbnail; never used for decisions.
    """
    base = image.convert("RGBA")
    w, h = base.size
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    if forbidden_mask is not None:
        m = np.asarray(forbidden_mask)
        m = m if m.dtype == bool else m > result.params.mask_threshold
        if m.shape == (h, w):
            red = np.zeros((h, w, 4), dtype=np.uint8)
            red[m] = (255, 0, 0, 60)
            layer = Image.alpha_composite(layer, Image.fromarray(red, "RGBA"))
            draw = ImageDraw.Draw(layer)
    for b in result.forbidden_boxes:
        draw.rectangle(b.to_px(w, h), fill=(255, 0, 0, 70), outline=(255, 0, 0, 255), width=2)
    font = ImageFont.load_default(size=max(9, min(w, h) // 40))
    for i, q in enumerate(result.proposals):
        color = _PALETTE[i % len(_PALETTE)]
        x1, y1, x2, y2 = q.box.to_px(w, h)
        draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=(*color, 255), width=2)
        draw.text((x1 + 3, y1 + 2), f"{i}:{q.source} {q.score:.2f}", fill=(*color, 255), font=font,
                  stroke_width=1, stroke_fill=(0, 0, 0, 255))
    return Image.alpha_composite(base, layer).convert("RGB")
