"""readability_eval: WCAG 2.x contrast of the drawn text against what is behind it.

Fixes of the original's measurement: the background is sampled under the *tight* text box with
the glyph pixels left out (the original sampled a square in the middle of the text, i.e. mostly
the text itself), and the colour is the one the overlay actually drew (the original used the
request default).
Besides the contrast against the mean background colour (the original's definition, kept for
the score), a per-pixel 10th-percentile contrast is reported, because a mean hides busy
backgrounds where part of the text sits on a colour close to its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

# WCAG 2.x thresholds (normal text, large text).
AA_NORMAL, AA_LARGE = 4.5, 3.0
AAA_NORMAL, AAA_LARGE = 7.0, 4.5
# "Large": at least 18 pt, or 14 pt bold; 1 pt = 4/3 CSS px.
LARGE_TEXT_PX = 24.0
LARGE_BOLD_TEXT_PX = 18.66
WORST_CASE_PERCENTILE = 10.0

RGB = tuple[int, int, int]


def srgb_to_linear(channel: np.ndarray | float) -> np.ndarray:
    """sRGB 0..255 to linear light, WCAG 2.x definition (threshold 0.03928 as WCAG writes it)."""
    c = np.asarray(channel, dtype=np.float64) / 255.0
    return np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def relative_luminance(rgb: Sequence[float] | np.ndarray) -> np.ndarray | float:
    """Relative luminance of one colour (returns float) or of an (..., 3) array of colours."""
    arr = np.asarray(rgb, dtype=np.float64)
    lin = srgb_to_linear(arr[..., :3])
    lum = lin[..., 0] * 0.2126 + lin[..., 1] * 0.7152 + lin[..., 2] * 0.0722
    return float(lum) if lum.ndim == 0 else lum


def contrast_from_luminance(l1: np.ndarray | float, l2: np.ndarray | float) -> np.ndarray | float:
    hi, lo = np.maximum(l1, l2), np.minimum(l1, l2)
    out = (hi + 0.05) / (lo + 0.05)  # no special case for black: the formula is defined there
    return float(out) if np.ndim(out) == 0 else out


def contrast_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """WCAG contrast ratio between two sRGB colours, 1..21."""
    return float(contrast_from_luminance(relative_luminance(a), relative_luminance(b)))


def is_large_text(font_size_px: float, bold: bool = False) -> bool:
    return font_size_px >= LARGE_TEXT_PX or (bold and font_size_px >= LARGE_BOLD_TEXT_PX)


def thresholds(large: bool) -> tuple[float, float]:
    """(AA, AAA) minimum contrast."""
    return (AA_LARGE, AAA_LARGE) if large else (AA_NORMAL, AAA_NORMAL)


def readability_score(contrast: float, large: bool) -> float:
    """The original's mapping: AAA -> 1; AA -> 0.5..1 linearly up to AAA; below AA -> 0..0.5."""
    aa, aaa = thresholds(large)
    if contrast >= aaa:
        return 1.0
    if contrast >= aa:
        return 0.5 + min(0.5, (contrast - aa) / (aaa - aa) * 0.5)
    return min(0.5, contrast / aa * 0.5)


def parse_hex_color(value: str) -> RGB:
    """'RRGGBB', 'RRGGBBAA' or '#RGB' forms to an RGB tuple (alpha ignored)."""
    s = value.strip().lstrip("#")
    if len(s) == 3:
        s = "".join(ch * 2 for ch in s)
    if len(s) not in (6, 8) or any(ch not in "0123456789abcdefABCDEF" for ch in s):
        raise ValueError(f"not a hex colour: {value!r}")
    return (int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16))


def to_hex(rgb: Sequence[int]) -> str:
    return "".join(f"{int(v):02x}" for v in rgb[:3])


def background_pixels(
    image: Image.Image | np.ndarray,
    glyph_mask: np.ndarray,
    text_bbox_px: tuple[int, int, int, int],
) -> np.ndarray:
    """RGB pixels (N, 3) inside the text box that are not covered by any glyph.

    ``glyph_mask`` is a boolean (H, W) array of the whole image: True where the text has any
    coverage (anti-aliased edges included), so drawn-text pixels never count as background.
    """
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"expected an RGB image, got array of shape {arr.shape}")
    if glyph_mask.shape != arr.shape[:2]:
        raise ValueError(
            f"glyph mask {glyph_mask.shape} does not match the image {arr.shape[:2]}: "
            "they must come from the same variant image"
        )
    h, w = arr.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in text_bbox_px)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty text box {text_bbox_px} for an image of {w}x{h}")
    region = arr[y1:y2, x1:x2, :3]
    keep = ~glyph_mask[y1:y2, x1:x2].astype(bool)
    pixels = region[keep]
    if pixels.size == 0:
        raise ValueError("the text box has no background pixels: every pixel is covered by a glyph")
    return pixels.reshape(-1, 3)


@dataclass(frozen=True)
class BackgroundContrast:
    mean_rgb: RGB
    contrast_mean: float  # against the mean background colour (the original's definition)
    contrast_p10: float  # 10th percentile over individual background pixels (worst-case-ish)
    contrast_min: float
    pixel_count: int


def measure_contrast(text_rgb: Sequence[int], pixels: np.ndarray) -> BackgroundContrast:
    """Contrast of one text colour against a set of background pixels (N, 3)."""
    mean = pixels.astype(np.float64).mean(axis=0)
    text_l = relative_luminance(text_rgb)
    per_pixel = contrast_from_luminance(text_l, relative_luminance(pixels))
    return BackgroundContrast(
        mean_rgb=(int(round(mean[0])), int(round(mean[1])), int(round(mean[2]))),
        contrast_mean=contrast_from_luminance(text_l, relative_luminance(mean)),
        contrast_p10=float(np.percentile(per_pixel, WORST_CASE_PERCENTILE)),
        contrast_min=float(np.min(per_pixel)),
        pixel_count=int(pixels.shape[0]),
    )


@dataclass(frozen=True)
class ReadabilityMetrics:
    contrast_ratio: float  # text colour vs mean background colour
    contrast_ratio_p10: float
    contrast_ratio_min: float
    text_color_hex: str
    text_color_rgb: RGB
    background_color_rgb: RGB  # mean of the background pixels
    background_pixel_count: int
    text_bbox_px: tuple[int, int, int, int]
    font_size_px: float
    bold: bool
    is_large_text: bool
    aa_threshold: float
    aaa_threshold: float
    wcag_aa_compliant: bool
    wcag_aaa_compliant: bool
    worst_case_aa_compliant: bool  # the 10th-percentile contrast also passes AA
    readability_score: float  # the original's mapping of contrast_ratio
    readability_score_worst_case: float  # same mapping of contrast_ratio_p10

    def to_dict(self) -> dict[str, Any]:
        return {
            "contrast_ratio": self.contrast_ratio,
            "contrast_ratio_p10": self.contrast_ratio_p10,
            "contrast_ratio_min": self.contrast_ratio_min,
            "text_color": self.text_color_hex,
            "text_color_rgb": list(self.text_color_rgb),
            "background_color_rgb": list(self.background_color_rgb),
            "background_pixel_count": self.background_pixel_count,
            "text_bbox_px": list(self.text_bbox_px),
            "font_size_px": self.font_size_px,
            "bold": self.bold,
            "is_large_text": self.is_large_text,
            "aa_threshold": self.aa_threshold,
            "aaa_threshold": self.aaa_threshold,
            "wcag_aa_compliant": self.wcag_aa_compliant,
            "wcag_aaa_compliant": self.wcag_aaa_compliant,
            "worst_case_aa_compliant": self.worst_case_aa_compliant,
            "readability_score": self.readability_score,
            "readability_score_worst_case": self.readability_score_worst_case,
        }


def evaluate_readability(
    background_image: Image.Image | np.ndarray,
    glyph_mask: np.ndarray,
    text_bbox_px: tuple[int, int, int, int],
    text_color_rgb: Sequence[int],
    font_size_px: float,
    *,
    bold: bool = False,
) -> ReadabilityMetrics:
    """WCAG metrics of the drawn text.

    ``background_image`` is best the variant image *before* the overlay (then the pixels under
    the glyphs are real background too, but they are still left out so that passing the overlaid
    image instead gives the same answer: there every glyph pixel, anti-aliased edges included,
    is text colour or a blend with it, never background).
    """
    pixels = background_pixels(background_image, glyph_mask, text_bbox_px)
    rgb = (int(text_color_rgb[0]), int(text_color_rgb[1]), int(text_color_rgb[2]))
    bg = measure_contrast(rgb, pixels)
    large = is_large_text(font_size_px, bold)
    aa, aaa = thresholds(large)
    return ReadabilityMetrics(
        contrast_ratio=bg.contrast_mean,
        contrast_ratio_p10=bg.contrast_p10,
        contrast_ratio_min=bg.contrast_min,
        text_color_hex=to_hex(rgb),
        text_color_rgb=rgb,
        background_color_rgb=bg.mean_rgb,
        background_pixel_count=bg.pixel_count,
        text_bbox_px=tuple(int(v) for v in text_bbox_px),  # type: ignore[arg-type]
        font_size_px=float(font_size_px),
        bold=bold,
        is_large_text=large,
        aa_threshold=aa,
        aaa_threshold=aaa,
        wcag_aa_compliant=bg.contrast_mean >= aa,
        wcag_aaa_compliant=bg.contrast_mean >= aaa,
        worst_case_aa_compliant=bg.contrast_p10 >= aa,
        readability_score=readability_score(bg.contrast_mean, large),
        readability_score_worst_case=readability_score(bg.contrast_p10, large),
    )
