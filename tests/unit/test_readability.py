"""readability_eval against an independent WCAG 2.x implementation written here from the W3C text.

W3C (WCAG 2.x, "relative luminance"): for each sRGB channel C = 8-bit / 255,
C_lin = C / 12.92 if C <= 0.04045 else ((C + 0.055) / 1.055) ** 2.4   (sRGB standard threshold;
WCAG's 0.03928 gives identical results for 8-bit values), L = 0.2126 R + 0.7152 G + 0.0722 B,
contrast = (L_lighter + 0.05) / (L_darker + 0.05).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.imaging import detection, gradient, solid
from variant_pipeline.work.overlay import render_overlay
from variant_pipeline.work.planner import plan_placements
from variant_pipeline.work.readability import (
    contrast_ratio,
    evaluate_readability,
    is_large_text,
    readability_score,
)


def w3c_luminance(rgb: tuple[float, float, float]) -> float:
    def lin(v: float) -> float:
        c = v / 255.0
        return c / 12.92 if c <= 0.04045 else math.pow((c + 0.055) / 1.055, 2.4)

    r, g, b = (lin(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def w3c_contrast(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    la, lb = w3c_luminance(a), w3c_luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


PAIRS = [
    ((255, 255, 255), (0, 0, 0)),
    ((255, 255, 255), (118, 118, 118)),  # #767676: the lightest grey passing AA on white
    ((255, 255, 255), (119, 119, 119)),  # #777777: just fails
    ((255, 0, 0), (255, 255, 255)),
    ((0, 0, 255), (255, 255, 0)),
    ((13, 13, 13), (250, 240, 230)),
    ((0, 0, 0), (0, 0, 0)),
    ((0, 0, 0), (1, 1, 1)),
    ((10, 200, 30), (200, 30, 120)),
]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_contrast_matches_independent_wcag(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    assert contrast_ratio(a, b) == pytest.approx(w3c_contrast(a, b), rel=1e-9)
    assert contrast_ratio(a, b) == pytest.approx(contrast_ratio(b, a))


def test_known_reference_values() -> None:
    assert contrast_ratio((255, 255, 255), (0, 0, 0)) == pytest.approx(21.0)
    assert round(contrast_ratio((255, 255, 255), (118, 118, 118)), 2) == 4.54
    assert contrast_ratio((255, 255, 255), (119, 119, 119)) < 4.5
    # No special case for a pure black darker colour (the original returned 21 for any pair).
    assert contrast_ratio((0, 0, 0), (0, 0, 0)) == pytest.approx(1.0)


def test_large_text_and_score_mapping() -> None:
    assert is_large_text(24) and not is_large_text(23.9)
    assert is_large_text(18.66, bold=True) and not is_large_text(18.66)
    assert readability_score(7.0, large=False) == 1.0
    assert readability_score(4.5, large=False) == pytest.approx(0.5)
    assert readability_score(5.75, large=False) == pytest.approx(0.75)
    assert readability_score(2.25, large=False) == pytest.approx(0.25)
    assert readability_score(4.5, large=True) == 1.0
    assert readability_score(3.0, large=True) == pytest.approx(0.5)


def _text_mask(size: tuple[int, int], text_box: tuple[int, int, int, int]) -> np.ndarray:
    """A glyph-like mask: a few thick strokes inside the box."""
    img = Image.new("L", size, 0)
    d = ImageDraw.Draw(img)
    x1, y1, x2, y2 = text_box
    for i in range(x1 + 4, x2 - 6, 14):
        d.rectangle((i, y1 + 3, i + 5, y2 - 4), fill=255)
    return np.asarray(img) > 0


def test_background_excludes_glyph_pixels_on_overlaid_image() -> None:
    w, h = 200, 100
    box = (20, 30, 180, 70)
    mask = _text_mask((w, h), box)
    bg_rgb, text_rgb = (30, 60, 150), (250, 250, 250)
    overlaid = np.array(solid(w, h, bg_rgb))
    overlaid[mask] = text_rgb  # the text as drawn
    m = evaluate_readability(overlaid, mask, box, text_rgb, font_size_px=30)
    assert m.background_color_rgb == bg_rgb  # no text pixel leaked into the background sample
    assert m.contrast_ratio == pytest.approx(w3c_contrast(text_rgb, bg_rgb), rel=1e-9)
    assert m.contrast_ratio_p10 == pytest.approx(m.contrast_ratio)
    assert m.background_pixel_count == int((~mask[30:70, 20:180]).sum())
    assert m.is_large_text and m.wcag_aa_compliant


def test_worst_case_reveals_busy_background() -> None:
    # White text over a box that is 70 % dark, 30 % white: the mean looks fine, the text is not.
    w, h = 100, 50
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:, :] = (20, 20, 20)
    arr[:, 70:] = (255, 255, 255)
    mask = np.zeros((h, w), dtype=bool)
    mask[20:30, 10:90:7] = True
    m = evaluate_readability(arr, mask, (0, 0, w, h), (255, 255, 255), font_size_px=16)
    bg = arr[~mask].astype(float).mean(axis=0)
    assert m.contrast_ratio == pytest.approx(w3c_contrast((255, 255, 255), tuple(bg)), rel=1e-6)
    assert m.contrast_ratio > 3.0
    assert m.contrast_ratio_p10 < m.contrast_ratio
    assert m.contrast_ratio_min == pytest.approx(1.0)
    assert not m.is_large_text and m.aa_threshold == 4.5


def test_pre_overlay_and_overlaid_image_agree_on_a_real_render() -> None:
    w = h = 256
    base = gradient(w, h, seed=3)
    plan = plan_placements(w, h, [detection((60, 120, 200, 250), w, h)], None)
    r = render_overlay(base, "바삭한 치킨 한입", plan)
    pre = evaluate_readability(base, r.glyph_mask, r.text_bbox_px, r.color_rgb, r.font_size_px,
                               bold=r.bold)
    post = evaluate_readability(r.image, r.glyph_mask, r.text_bbox_px, r.color_rgb, r.font_size_px,
                                bold=r.bold)
    assert pre.to_dict() == post.to_dict()
    # Independent check of the headline number on the same pixels.
    x1, y1, x2, y2 = r.text_bbox_px
    region = np.asarray(base)[y1:y2, x1:x2][~r.glyph_mask[y1:y2, x1:x2]]
    expected = w3c_contrast(r.color_rgb, tuple(region.astype(float).mean(axis=0)))
    assert pre.contrast_ratio == pytest.approx(expected, rel=1e-3)  # mean rounded to 8 bits


def test_mask_from_another_image_is_rejected() -> None:
    with pytest.raises(ValueError, match="same variant image"):
        evaluate_readability(solid(100, 100, (0, 0, 0)), np.zeros((50, 50), bool), (0, 0, 10, 10),
                             (255, 255, 255), 20)
