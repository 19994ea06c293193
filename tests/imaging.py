"""Synthetic images and detections for the image-geometry and evaluation stage tests, and the
marker for tests that draw emoji."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from variant_pipeline.work import fonts
from variant_pipeline.work.types import Detection, NormBox

needs_emoji = pytest.mark.skipif(not any("emoji" in stem for stem in fonts._installed_fonts()),
                                 reason="no emoji font installed (scripts/setup.sh installs fonts-noto-color-emoji)")


def gradient(width: int, height: int | None = None, seed: int = 0) -> Image.Image:
    """A smooth, mid-tone, photo-like colour field (deterministic)."""
    height = height or width
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = seed * 0.7
    rgb = np.stack([
        120 + 60 * np.sin(x / width * 3 + phase),
        90 + 40 * np.cos(y / height * 4 + phase),
        60 + 30 * np.sin((x + y) / (width + height) * 4 + phase),
    ], axis=-1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def solid(width: int, height: int, rgb: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (width, height), rgb)


def detection(box_px: tuple[float, float, float, float], width: int, height: int,
              label: str = "pizza", forbidden: bool = True, score: float = 0.9) -> Detection:
    return Detection(label=label, class_id=53, score=score, box_px=box_px,
                     box=NormBox.from_px(box_px, width, height), forbidden=forbidden)


def box_mask(width: int, height: int, *boxes_px: tuple[float, float, float, float]) -> np.ndarray:
    """The detector's forbidden mask: uint8, 255 inside any box, 0 elsewhere."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for x1, y1, x2, y2 in boxes_px:
        mask[int(y1):int(y2), int(x1):int(x2)] = 255
    return mask


def paint_food(image: Image.Image, box_px: tuple[float, float, float, float],
               rgb: tuple[int, int, int] = (200, 120, 40)) -> Image.Image:
    """Paint a filled rectangle where the planted "food" is, so renders show it."""
    out = image.copy()
    x1, y1, x2, y2 = (int(v) for v in box_px)
    out.paste(rgb, (x1, y1, x2, y2))
    return out
