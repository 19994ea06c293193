"""yolo_detect: forbidden-class validation, box and mask logic on planted boxes, the tiny YOLO end to end."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from variant_pipeline.config import DEFAULT_FORBIDDEN_CLASSES
from variant_pipeline.models.detector import Detector
from variant_pipeline.work.detect import (
    ForbiddenClassError,
    detect,
    forbidden_mask,
    to_detections,
    validate_forbidden_classes,
)
from variant_pipeline.work.types import RawDetection

COCO_SUBSET = {0: "person", 45: "bowl", 53: "pizza", 56: "chair"}


def test_validate_forbidden_classes():
    assert validate_forbidden_classes(["Person", " bowl "], COCO_SUBSET) == {"person", "bowl"}
    with pytest.raises(ForbiddenClassError) as err:
        validate_forbidden_classes(["person", "hand", "plate"], COCO_SUBSET)
    msg = str(err.value)
    assert "'hand'" in msg and "'plate'" in msg and "bowl, chair, person, pizza" in msg


def test_planted_boxes_to_detections_and_mask():
    raw = [
        RawDetection(45, "bowl", 0.9, (10.2, 20.0, 50.7, 60.0)),
        RawDetection(56, "chair", 0.8, (70.0, 0.0, 90.0, 30.0)),  # allowed class
        RawDetection(0, "person", 0.5, (-15.0, 90.0, 40.0, 140.0)),  # spills outside: clipped
        RawDetection(53, "pizza", 0.4, (120.0, 10.0, 130.0, 20.0)),  # fully outside: dropped
    ]
    dets = to_detections(raw, 100, 120, frozenset({"bowl", "person", "pizza"}))
    assert [d.label for d in dets] == ["bowl", "chair", "person"]
    bowl, chair, person = dets
    assert bowl.forbidden and not chair.forbidden and person.forbidden
    assert person.box_px == (0.0, 90.0, 40.0, 120.0)
    assert bowl.box.x == pytest.approx(0.102) and bowl.box.h == pytest.approx(40 / 120)
    assert bowl.box.to_px(100, 120) == (10, 20, 51, 60)

    mask = np.asarray(forbidden_mask(dets, 100, 120))
    assert mask.shape == (120, 100) and set(np.unique(mask)) == {0, 255}
    expected = np.zeros((120, 100), np.uint8)
    expected[20:60, 10:51] = 255  # rounded outwards
    expected[90:120, 0:40] = 255
    assert np.array_equal(mask, expected)  # the chair is not forbidden: not in the mask


@pytest.fixture(scope="module")
def detector(tiny_models) -> Detector:
    return Detector.load(str(tiny_models["detector_model"]), "cpu")


def test_detect_end_to_end_on_tiny_yolo(detector):
    rng = np.random.RandomState(0)
    images = [Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in ((128, 96), (64, 64))]
    every_class = list(detector.class_names.values())
    results = detect(detector, images, forbidden_classes=["person", "bowl"], conf=1e-6)
    assert len(results) == 2
    for image, res in zip(images, results, strict=True):
        assert (res.width, res.height) == image.size and res.forbidden_mask.size == image.size
        assert res.forbidden_mask.mode == "L"
        assert res.detections, "a near-zero threshold keeps random-weight boxes"
        assert all(d.forbidden == (d.label in {"person", "bowl"}) for d in res.detections)
        assert all(0 <= v <= 1 for d in res.detections for v in d.box.to_xyxy())
        assert np.array_equal(np.asarray(res.forbidden_mask),
                              np.asarray(forbidden_mask(res.detections, *image.size)))
    # All classes forbidden: the mask covers every box.
    all_res = detect(detector, images[:1], forbidden_classes=every_class, conf=1e-6)[0]
    assert all(d.forbidden for d in all_res.detections)
    # Default threshold on random weights: no boxes, an empty mask (not an error).
    quiet = detect(detector, images[:1], forbidden_classes=DEFAULT_FORBIDDEN_CLASSES)[0]
    assert quiet.detections == () and not np.asarray(quiet.forbidden_mask).any()
    assert quiet.to_dict()["detections"] == []


def test_detect_rejects_unknown_forbidden_class(detector):
    with pytest.raises(ForbiddenClassError, match="'hand'.*valid names: .*person"):
        detect(detector, [Image.new("RGB", (32, 32))], forbidden_classes=["person", "hand"])
