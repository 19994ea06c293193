"""iou_eval against torchvision.ops.box_iou, on the placement box and the tight text box."""

from __future__ import annotations

import random

import pytest
import torch
from torchvision.ops import box_iou as tv_box_iou

from tests.imaging import detection
from variant_pipeline.work.iou import box_iou, evaluate_iou
from variant_pipeline.work.types import NormBox


def _tv(a: NormBox, b: NormBox) -> float:
    return float(tv_box_iou(torch.tensor([a.to_xyxy()], dtype=torch.float64),
                            torch.tensor([b.to_xyxy()], dtype=torch.float64))[0, 0])


def _random_box(rng: random.Random) -> NormBox:
    x, y = rng.uniform(0, 0.9), rng.uniform(0, 0.9)
    return NormBox(x, y, rng.uniform(0.01, 1 - x), rng.uniform(0.01, 1 - y))


def test_box_iou_matches_torchvision_on_random_pairs() -> None:
    rng = random.Random(7)
    for _ in range(500):
        a, b = _random_box(rng), _random_box(rng)
        assert box_iou(a, b) == pytest.approx(_tv(a, b), abs=1e-9)


def test_evaluate_iou_matches_torchvision_for_both_boxes() -> None:
    w = h = 1080
    dets = [
        detection((200, 400, 880, 1000), w, h, "pizza"),
        detection((0, 0, 300, 250), w, h, "person"),
        detection((600, 100, 1000, 300), w, h, "cup"),
        detection((0, 0, 1080, 1080), w, h, "dining table", forbidden=False),  # ignored
    ]
    placement = NormBox(0.0, 0.0, 0.8, 0.18)
    text = NormBox(0.12, 0.05, 0.55, 0.08)  # the glyphs sit inside the placement box
    m = evaluate_iou(placement, text, dets)
    forbidden = [d for d in dets if d.forbidden]
    boxes = torch.tensor([d.box.to_xyxy() for d in forbidden], dtype=torch.float64)
    tv_text = tv_box_iou(torch.tensor([text.to_xyxy()], dtype=torch.float64), boxes)[0].tolist()
    tv_place = tv_box_iou(torch.tensor([placement.to_xyxy()], dtype=torch.float64), boxes)[0].tolist()
    assert m.detection_count == 3
    assert m.all_ious_text == pytest.approx(tv_text, abs=1e-9)
    assert m.all_ious_placement == pytest.approx(tv_place, abs=1e-9)
    assert m.max_iou_text == pytest.approx(max(tv_text))
    assert m.max_iou_placement == pytest.approx(max(tv_place))
    assert m.argmax_text_label == forbidden[tv_text.index(max(tv_text))].label
    assert m.argmax_placement_label == forbidden[tv_place.index(max(tv_place))].label
    assert m.overlap_detected and m.placement_overlap_detected
    # The placement box is much larger than the text, so it overstates the overlap here.
    assert m.max_iou_placement != pytest.approx(m.max_iou_text)
    d = m.to_dict()
    assert d["iou_with_food"] == m.max_iou_text and len(d["all_ious_text"]) == 3


def test_text_clear_of_food_while_placement_box_overlaps() -> None:
    w = h = 512
    dets = [detection((300, 0, 512, 120), w, h)]
    placement = NormBox(0.0, 0.0, 0.8, 0.18)  # reaches into the food box
    text = NormBox(0.05, 0.03, 0.45, 0.1)  # the drawn glyphs do not
    m = evaluate_iou(placement, text, dets)
    assert m.max_iou_text == 0.0 and not m.overlap_detected
    assert m.max_iou_placement > 0 and m.placement_overlap_detected


def test_no_detections_gives_zeros_not_an_error() -> None:
    m = evaluate_iou(NormBox(0, 0, 1, 0.2), NormBox(0.1, 0.05, 0.5, 0.1), [])
    assert m.detection_count == 0 and m.max_iou_text == 0.0 and m.argmax_text_label is None
    assert not m.overlap_detected


def test_boxes_are_clamped_to_the_image() -> None:
    w = h = 100
    dets = [detection((-20, -20, 50, 50), w, h)]
    m = evaluate_iou(NormBox(-0.1, -0.1, 0.6, 0.6), NormBox(0, 0, 0.5, 0.5), dets)
    assert m.max_iou_text == pytest.approx(1.0)
    assert m.max_iou_placement == pytest.approx(1.0)
