"""planner: planted forbidden regions are avoided, sizes respected, output deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from tests.imaging import box_mask, detection, gradient
from variant_pipeline.work.iou import box_iou
from variant_pipeline.work.planner import (
    FREE_AREA_SOURCE,
    PlannerParams,
    PlannerResult,
    draw_plan,
    plan_placements,
)
from variant_pipeline.work.types import NormBox

PLANTED = [
    (1080, (200, 400, 880, 1000)),  # the original's worked example: food centred low
    (256, (60, 110, 200, 250)),
    (256, (0, 0, 256, 90)),  # a band across the top
    (512, (150, 150, 360, 360)),  # dead centre
    (512, (300, 0, 512, 512)),  # the right part of the image
]


def _pixel_iou(box: NormBox, mask: np.ndarray) -> float:
    h, w = mask.shape
    prop = np.zeros_like(mask, dtype=bool)
    x1, y1, x2, y2 = box.to_px(w, h)
    prop[y1:y2, x1:x2] = True
    m = mask > 128
    return (prop & m).sum() / max(1, (prop | m).sum())


@pytest.mark.parametrize(("size", "box_px"), PLANTED)
def test_planted_forbidden_rectangle_is_avoided(size: int, box_px: tuple[int, int, int, int]) -> None:
    det = detection(box_px, size, size)
    mask = box_mask(size, size, box_px)
    params = PlannerParams()
    r = plan_placements(size, size, [det], mask, params)
    assert r.feasible, r.reason
    assert 1 <= len(r.proposals) <= params.max_proposals
    for p in r.proposals:
        # Independent re-computation of the occlusion, not the planner's own numbers.
        assert box_iou(p.box, det.box) <= params.max_forbidden_iou + 1e-9, p
        assert _pixel_iou(p.box, mask) <= params.max_forbidden_iou + 1e-9, p
        assert p.box.w >= params.min_overlay_width - 1e-9 and p.box.h >= params.min_overlay_height - 1e-9, p
        x1, y1, x2, y2 = p.box.to_xyxy()
        assert min(x1, y1) >= -1e-9 and max(x2, y2) <= 1 + 1e-9, p
    assert [p.score for p in r.proposals] == sorted((p.score for p in r.proposals), reverse=True)
    assert len({p.proposal_id for p in r.proposals}) == len(r.proposals)
    free = [p for p in r.proposals if p.source == FREE_AREA_SOURCE]
    assert len(free) == 1 and free[0].occlusion_iou == 0.0
    # The free area is the largest proposal.
    assert free[0].box.area == max(p.box.area for p in r.proposals)


def test_rule_boxes_below_minimum_size_are_dropped() -> None:
    r = plan_placements(1080, 1080, [], None)
    assert {"rule_left", "rule_right"} <= set(r.rejected_min_size)
    assert not any(p.source in ("rule_left", "rule_right") for p in r.proposals)
    # With nothing to avoid the free area is the whole image.
    free = next(p for p in r.proposals if p.source == FREE_AREA_SOURCE)
    assert free.box == NormBox(0.0, 0.0, 1.0, 1.0)


def test_every_valid_grid_size_is_used() -> None:
    # Loose de-duplication and a large cap, so every candidate survives.
    params = PlannerParams(max_proposals=500, duplicate_iou=1.0)
    det = detection((300, 500, 700, 800), 1080, 1080)
    r = plan_placements(1080, 1080, [det], None, params)
    sizes = {(round(p.box.w, 2), round(p.box.h, 2)) for p in r.proposals if p.source.startswith("grid_")}
    expected = {(0.8, 0.18), (0.6, 0.15), (0.5, 0.12), (0.7, 0.2), (0.9, 0.15), (0.65, 0.16)}
    assert sizes == expected  # 0.4, 0.3 and 0.45 wide are under the 0.5 minimum


def test_custom_minimum_applies_to_all_candidates() -> None:
    params = PlannerParams(min_overlay_width=0.85, min_overlay_height=0.2)
    r = plan_placements(512, 512, [detection((100, 300, 400, 500), 512, 512)], None, params)
    assert r.feasible
    assert all(p.box.w >= 0.85 - 1e-9 and p.box.h >= 0.2 - 1e-9 for p in r.proposals)
    assert "rule_top" in r.rejected_min_size


def test_deterministic() -> None:
    det = detection((60, 110, 200, 250), 256, 256)
    mask = box_mask(256, 256, (60, 110, 200, 250))
    a = plan_placements(256, 256, [det], mask)
    b = plan_placements(256, 256, [det], mask.copy())
    assert a == b
    assert a.to_dict() == b.to_dict()
    assert PlannerResult.from_dict(a.to_dict()) == a


def test_infeasible_is_explicit() -> None:
    det = detection((0, 0, 256, 256), 256, 256)
    r = plan_placements(256, 256, [det], None)
    assert not r.feasible
    assert r.reason and "least occluded" in r.reason
    assert len(r.proposals) == 1 and r.proposals[0].occlusion_iou > 0.05


def test_mask_alone_is_avoided() -> None:
    # A segmentation-style mask with no matching box (e.g. an irregular shape).
    mask = np.zeros((256, 256), dtype=np.uint8)
    yy, xx = np.mgrid[0:256, 0:256]
    mask[(yy - 180) ** 2 + (xx - 128) ** 2 < 70**2] = 255
    r = plan_placements(256, 256, [], mask)
    assert r.feasible
    assert all(_pixel_iou(p.box, mask) <= 0.05 + 1e-9 for p in r.proposals)
    assert r.forbidden_position is None and r.mask_used


def test_non_forbidden_detections_are_ignored() -> None:
    det = detection((0, 0, 256, 256), 256, 256, label="dining table", forbidden=False)
    assert plan_placements(256, 256, [det], None) == plan_placements(256, 256, [], None)


def test_mask_from_another_image_is_rejected() -> None:
    with pytest.raises(ValueError, match="own image"):
        plan_placements(256, 256, [], np.zeros((512, 512), dtype=np.uint8))


def test_forbidden_position_summary() -> None:
    r = plan_placements(1080, 1080, [detection((200, 400, 880, 1000), 1080, 1080)], None)
    fp = r.forbidden_position
    assert fp is not None and fp.is_center_x and fp.is_bottom_y and not fp.is_top_y


def test_visualisation_marks_forbidden_and_proposals() -> None:
    img = gradient(256)
    box_px = (60, 110, 200, 250)
    mask = box_mask(256, 256, box_px)
    r = plan_placements(256, 256, [detection(box_px, 256, 256)], mask)
    vis = draw_plan(img, r, mask)
    assert vis.size == img.size and vis.mode == "RGB"
    before, after = np.asarray(img).astype(int), np.asarray(vis).astype(int)
    # The forbidden interior is tinted red.
    inner = (slice(150, 200), slice(100, 160))
    assert (after[inner][..., 0] - before[inner][..., 0]).mean() > 20
