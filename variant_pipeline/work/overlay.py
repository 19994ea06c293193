"""overlay: choose a placement, fit and draw the ad copy.

Kept from the original: the group-based choice between proposals (max_size / top / bottom /
left / right / center, with the long-text bonus and the forbidden-position adjustments), 8 %
padding, the font size search 96 -> 28 step 2 with line spacing 6, centred text.
Changed:

- the choice is deterministic (the original sampled with an unseeded softmax), and it moves to
  the next-ranked proposal when the text does not fit, instead of letting it overflow (the
  original's 28-character copy overflowed a 15 %-wide box);
- sizes scale with the image (the original's pixel sizes are for a 1080-px image; on a 256-px
  demo image 28 px would not fit anywhere) and are configurable;
- wrapping measures width and breaks inside a word when it must (Korean copy has few spaces);
- every character is drawn by a font that has its glyph (no tofu): the chosen font, and for
  symbols, emoji or another script it lacks, a fallback font (colour emoji as they are), see
  ``fonts.py``;
- the colour is the one with the best WCAG contrast against the pixels actually under the text,
  keeping the recommended colour when it passes AA, and the colour drawn is recorded;
- the result records the tight bounding box and the glyph mask of what was drawn, which the
  OCR, readability and IoU evaluations use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from variant_pipeline.work.fonts import ChainedFont, FontChain, FontChoice, resolve_font_chain
from variant_pipeline.work.planner import ForbiddenPosition, PlannerResult, Proposal
from variant_pipeline.work.readability import (
    background_pixels,
    is_large_text,
    measure_contrast,
    parse_hex_color,
    thresholds,
    to_hex,
)
from variant_pipeline.work.types import FontRecommendation, NormBox

GROUP_ORDER = ("max_size", "top", "bottom", "left", "right", "center", "other")
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
BREAK_AFTER = (",", ".", "，", "。", "!", "?", "！", "？")


@dataclass(frozen=True)
class OverlayParams:
    padding_frac: float = 0.08  # of the box width/height, on each side
    # Font sizes, line spacing and step in pixels *for an image whose short side is
    # reference_px*; scaled to the actual image. reference_px=None uses them as absolute pixels.
    max_font_px: int = 96
    min_font_px: int = 28
    font_step_px: int = 2
    line_spacing_px: int = 6
    reference_px: int | None = 1080
    min_font_floor_px: int = 10  # never smaller than this, however small the image
    max_occlusion_iou: float = 0.05
    long_text_chars: int = 100  # from this length the max_size proposal is taken when present
    try_other_proposals: bool = True  # move down the ranking when the text does not fit
    font_path: str | None = None  # override; otherwise fonts.resolve_font_chain (VP_FONT_PATH, search)

    def scaled(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(max size, min size, step, spacing) in pixels for this image."""
        s = 1.0 if self.reference_px is None else min(width, height) / self.reference_px
        hi = max(self.min_font_floor_px, round(self.max_font_px * s))
        lo = min(hi, max(self.min_font_floor_px, round(self.min_font_px * s)))
        step = max(1, round(self.font_step_px * s))
        spacing = max(1, round(self.line_spacing_px * s))
        return hi, lo, step, spacing


@dataclass(frozen=True)
class RankedProposal:
    proposal: Proposal
    group: str
    group_score: float


@dataclass(frozen=True)
class TextFit:
    size: int
    lines: tuple[str, ...]
    width: int  # of the multiline text box at this size
    height: int
    fits: bool
    overflow: float  # max(text_w / avail_w, text_h / avail_h); <= 1 when it fits


@dataclass
class OverlayResult:
    image: Image.Image  # the overlaid RGB image
    text: str
    proposal: Proposal | None
    selection: str  # how the proposal was chosen
    box: NormBox  # the placement box (the chosen proposal's)
    box_px: tuple[int, int, int, int]
    padded_box_px: tuple[int, int, int, int]
    text_bbox_px: tuple[int, int, int, int]  # tight box of the drawn glyphs, x2/y2 exclusive
    text_box: NormBox
    glyph_mask: np.ndarray = field(repr=False)  # (H, W) bool: pixels any glyph covers
    font: FontChoice | None = None  # the primary font
    font_chain: FontChain | None = None  # with the fallbacks that drew what the primary lacks
    # The runs a fallback font drew: {"text", "font_path", "box_px"} (empty when the primary drew all).
    fallback_runs: tuple[dict[str, Any], ...] = ()
    font_size_px: int = 0
    line_spacing_px: int = 0
    lines: tuple[str, ...] = ()
    color_hex: str = ""
    color_rgb: tuple[int, int, int] = WHITE
    color_source: str = ""  # recommended | white | black
    color_contrast_p10: dict[str, float] = field(default_factory=dict)  # per candidate colour
    recommended_color_hex: str | None = None
    fits: bool = True
    fit_reason: str | None = None
    placement_warning: str | None = None
    bold: bool = False

    @property
    def wrapped_text(self) -> str:
        return "\n".join(self.lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready layout record (no image, no mask)."""
        return {
            "text": self.text,
            "proposal": self.proposal.to_dict() if self.proposal else None,
            "selection": self.selection,
            "box": self.box.as_list(), "box_px": list(self.box_px),
            "padded_box_px": list(self.padded_box_px),
            "text_bbox_px": list(self.text_bbox_px), "text_box": self.text_box.as_list(),
            "font_path": self.font.path if self.font else None,
            "font_name": f"{self.font.family} {self.font.face}".strip() if self.font else None,
            "font_source": self.font.source if self.font else None,
            "fallback_fonts": self.font_chain.fallback_report() if self.font_chain else [],
            "fallback_runs": list(self.fallback_runs),
            "font_size_px": self.font_size_px, "line_spacing_px": self.line_spacing_px,
            "bold": self.bold,
            "wrapped_text": self.wrapped_text, "lines": list(self.lines),
            "text_color": self.color_hex, "text_color_rgb": list(self.color_rgb),
            "color_source": self.color_source, "color_contrast_p10": self.color_contrast_p10,
            "recommended_color": self.recommended_color_hex,
            "fits": self.fits, "fit_reason": self.fit_reason,
            "placement_warning": self.placement_warning,
            "image_size": list(self.image.size),
        }


def proposal_group(source: str) -> str:
    s = source.lower()
    if "max_size" in s:
        return "max_size"
    for key in ("top", "bottom", "left", "right"):
        if key in s:
            return key
    if "center" in s or "middle" in s or "mid" in s:
        return "center"
    return "other"


def rank_proposals(
    proposals: Sequence[Proposal],
    text: str,
    forbidden_position: ForbiddenPosition | None,
    params: OverlayParams,
) -> tuple[list[RankedProposal], str | None]:
    """Proposals in the order to try them, and a warning when none is clear of forbidden regions.

    One representative (best score) per group is ranked by the adjusted group score; the other
    proposals follow by score. Ties fall back to the fixed group order, then the source name.
    """
    clear = [p for p in proposals if p.occlusion_iou <= params.max_occlusion_iou]
    warning = None
    if not clear:
        least = min(proposals, key=lambda p: (p.occlusion_iou, -p.score, p.source))
        clear = [least]
        warning = (f"no proposal within occlusion IoU {params.max_occlusion_iou}; "
                   f"using the least occluded ({least.source}, IoU {least.occlusion_iou:.3f})")
    groups: dict[str, list[Proposal]] = {}
    for p in sorted(clear, key=lambda p: (-p.score, p.source)):
        groups.setdefault(proposal_group(p.source), []).append(p)
    n = len(text)
    scores: dict[str, float] = {}
    for g, members in groups.items():
        s = members[0].score
        if g == "max_size" and n >= 20:
            s += min(1.0, (n - 20) / 80)  # long copy needs the large free area
        if forbidden_position is not None:
            if g == "bottom" and forbidden_position.is_top_y:
                s += 0.3
            if g == "top" and forbidden_position.is_bottom_y:
                s += 0.3
            if g in ("left", "right") and forbidden_position.is_center_x:
                s -= 0.3
        scores[g] = s

    def group_key(g: str) -> tuple[int, float, int]:
        forced = 0 if (g == "max_size" and n >= params.long_text_chars) else 1
        return (forced, -scores[g], GROUP_ORDER.index(g))

    order = sorted(groups, key=group_key)
    ranked = [RankedProposal(groups[g][0], g, scores[g]) for g in order]
    rest = sorted((p for g in order for p in groups[g][1:]), key=lambda p: (-p.score, p.source))
    ranked += [RankedProposal(p, proposal_group(p.source), p.score) for p in rest]
    return ranked, warning


TextFont = ImageFont.FreeTypeFont | ChainedFont


def _text_width(draw: ImageDraw.ImageDraw, s: str, font: TextFont) -> float:
    return font.getlength(s) if isinstance(font, ChainedFont) else draw.textlength(s, font=font)


def wrap_text(text: str, font: TextFont, max_width: float) -> list[str]:
    """Greedy wrap by measured width; a word wider than a line is broken between characters.

    Explicit newlines are kept. After a word ending a clause (, . ! ?) the line is broken when
    it is already half full, as the original did, so clauses stay together.
    """
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    lines: list[str] = []
    for paragraph in text.split("\n"):
        cur = ""
        for word in paragraph.split():
            trial = f"{cur} {word}" if cur else word
            if _text_width(draw, trial, font) <= max_width:
                cur = trial
            else:
                if cur:
                    lines.append(cur)
                    cur = ""
                if _text_width(draw, word, font) <= max_width:
                    cur = word
                else:
                    for ch in word:
                        if cur and _text_width(draw, cur + ch, font) > max_width:
                            lines.append(cur)
                            cur = ch
                        else:
                            cur += ch
            if cur and word.endswith(BREAK_AFTER) and _text_width(draw, cur, font) >= 0.5 * max_width:
                lines.append(cur)
                cur = ""
        if cur:
            lines.append(cur)
    return lines


def _measure(lines: Sequence[str], font: TextFont, spacing: int) -> tuple[int, int]:
    if isinstance(font, ChainedFont):
        x1, y1, x2, y2 = font.bbox(lines, spacing)
    else:
        draw = ImageDraw.Draw(Image.new("L", (1, 1)))
        x1, y1, x2, y2 = draw.multiline_textbbox((0, 0), "\n".join(lines), font=font,
                                                 spacing=spacing, align="center")
    return int(np.ceil(x2 - x1)), int(np.ceil(y2 - y1))


class _FontCache:
    def __init__(self, chain: FontChain) -> None:
        self.chain = chain
        self._fonts: dict[int, TextFont] = {}

    def get(self, size: int) -> TextFont:
        if size not in self._fonts:
            self._fonts[size] = self.chain.load(size)
        return self._fonts[size]


def fit_text(
    text: str, fonts: _FontCache, avail_w: int, avail_h: int, sizes: Sequence[int], spacing: int
) -> TextFit:
    """The largest size (in the order given) whose wrapped text fits; else the last, flagged."""
    last: TextFit | None = None
    for size in sizes:
        font = fonts.get(size)
        lines = wrap_text(text, font, avail_w)
        w, h = _measure(lines, font, spacing)
        overflow = max(w / max(avail_w, 1), h / max(avail_h, 1))
        last = TextFit(size, tuple(lines), w, h, overflow <= 1.0, overflow)
        if last.fits:
            return last
    assert last is not None
    return last


def _padded(box_px: tuple[int, int, int, int], pad: float) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box_px
    px, py = round((x2 - x1) * pad), round((y2 - y1) * pad)
    return (x1 + px, y1 + py, x2 - px, y2 - py)


def _choose_color(
    background: Image.Image, glyph_mask: np.ndarray, bbox: tuple[int, int, int, int],
    recommended: tuple[int, int, int] | None, size_px: int, bold: bool,
) -> tuple[tuple[int, int, int], str, dict[str, float]]:
    """Best worst-case (10th-percentile) WCAG contrast against the background under the text.

    The recommended colour is kept when it passes AA on that worst case; otherwise the best of
    recommended/white/black wins (ties in that order).
    """
    pixels = background_pixels(background, glyph_mask, bbox)
    aa, _ = thresholds(is_large_text(size_px, bold))
    options: list[tuple[str, tuple[int, int, int]]] = []
    if recommended is not None:
        options.append(("recommended", recommended))
    options += [("white", WHITE), ("black", BLACK)]
    contrasts = {name: measure_contrast(rgb, pixels).contrast_p10 for name, rgb in options}
    report = {f"{name}:{to_hex(rgb)}": round(contrasts[name], 4) for name, rgb in options}
    if recommended is not None and contrasts["recommended"] >= aa:
        return recommended, "recommended", report
    best = max(range(len(options)), key=lambda i: (contrasts[options[i][0]], -i))
    return options[best][1], options[best][0], report


def render_overlay(
    image: Image.Image,
    text: str,
    proposals: PlannerResult | Sequence[Proposal],
    font_rec: FontRecommendation | None = None,
    params: OverlayParams | None = None,
    *,
    font: FontChoice | FontChain | None = None,
) -> OverlayResult:
    """Draw ``text`` on the variant image in the best proposal where it fits.

    ``proposals``: the planner's result for *this* image (its forbidden position is used), or a
    plain list of proposals. ``font``: one font to draw everything with, or a chain; by default
    the fonts are resolved for the text (``fonts.resolve_font_chain``). Raises ValueError on
    empty text or no proposals, and fonts.FontCoverageError when no installed font has a glyph
    for some character of the text.
    """
    p = params or OverlayParams()
    if not text or not text.strip():
        raise ValueError("overlay text is empty")
    base = image.convert("RGB")
    w, h = base.size
    if isinstance(proposals, PlannerResult):
        if (proposals.width, proposals.height) != (w, h):
            raise ValueError(
                f"planner result is for a {proposals.width}x{proposals.height} image, this one is "
                f"{w}x{h}: proposals must come from the variant's own image"
            )
        props, fpos = list(proposals.proposals), proposals.forbidden_position
        planner_note = None if proposals.feasible else f"planner infeasible: {proposals.reason}"
    else:
        props, fpos, planner_note = list(proposals), None, None
    if not props:
        raise ValueError("no placement proposals to draw into")

    chain = font if isinstance(font, FontChain) else (
        FontChain(font) if font is not None else resolve_font_chain(text, font_rec, p.font_path))
    choice = chain.primary
    fonts = _FontCache(chain)
    bold = "bold" in choice.face.lower() or "bold" in choice.family.lower()
    hi, lo, step, spacing = p.scaled(w, h)
    sizes = list(range(hi, lo - 1, -step))
    if sizes[-1] != lo:
        sizes.append(lo)

    ranked, warning = rank_proposals(props, text, fpos, p)
    tried = ranked if p.try_other_proposals else ranked[:1]
    attempts: list[tuple[RankedProposal, tuple[int, int, int, int], tuple[int, int, int, int], TextFit]] = []
    for rp in tried:
        box_px = rp.proposal.box.to_px(w, h)
        padded = _padded(box_px, p.padding_frac)
        fit = fit_text(text, fonts, padded[2] - padded[0], padded[3] - padded[1], sizes, spacing)
        attempts.append((rp, box_px, padded, fit))
        if fit.fits:
            break
    fitting = [a for a in attempts if a[3].fits]
    if fitting:
        rp, box_px, padded, fit = fitting[0]
        idx = attempts.index(fitting[0])
        selection = (f"rank {idx} ({rp.group} group, score {rp.group_score:.3f})" if idx == 0 else
                     f"rank {idx} ({rp.group} group): the text did not fit the higher-ranked "
                     f"{', '.join(a[0].proposal.source for a in attempts[:idx])}")
        fit_reason = None
    else:
        # Nothing fits even at the smallest size: draw where it overflows least, and say so.
        rp, box_px, padded, fit = min(attempts, key=lambda a: a[3].overflow)
        selection = f"least overflow among {len(attempts)} proposals ({rp.group} group)"
        fit_reason = (
            f"text needs {fit.width}x{fit.height}px at the minimum size {fit.size}px but the padded "
            f"box {rp.proposal.source} is {padded[2] - padded[0]}x{padded[3] - padded[1]}px"
        )

    # Draw the glyphs into a coverage mask first; the same mask composites the colour, so the
    # recorded glyph mask and bounding box are exactly what is on the image.
    # Colour glyphs (emoji) go into their own layer, drawn as they are over the text.
    text_font = fonts.get(fit.size)
    coverage = Image.new("L", (w, h), 0)
    pictures: Image.Image | None = None
    fallback_runs: list[dict[str, Any]] = []
    cx, cy = (padded[0] + padded[2]) / 2, (padded[1] + padded[3]) / 2
    if isinstance(text_font, ChainedFont):
        pictures = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        text_font.draw(coverage, pictures, (cx, cy), fit.lines, spacing)
        fallback_runs = [
            {"text": run, "font_path": chain.fonts[i].path, "box_px": [round(v) for v in box]}
            for i, run, box in text_font.run_boxes((cx, cy), fit.lines, spacing) if i
        ]
    else:
        ImageDraw.Draw(coverage).multiline_text(
            (cx, cy), "\n".join(fit.lines), fill=255, font=text_font, anchor="mm",
            spacing=spacing, align="center",
        )
    glyph_mask = np.asarray(coverage) > 0
    if pictures is not None:
        glyph_mask |= np.asarray(pictures.getchannel("A")) > 0
    bbox = Image.fromarray(glyph_mask).getbbox()
    if bbox is None:
        raise ValueError(f"the text {text!r} drew no pixels inside the image")

    recommended = None
    rec_hex = font_rec.color_hex if font_rec else None
    if rec_hex:
        try:
            recommended = parse_hex_color(rec_hex)
        except ValueError:
            recommended = None  # an unparseable recommendation is ignored; recorded as given
    rgb, source, contrasts = _choose_color(base, glyph_mask, bbox, recommended, fit.size, bold)
    overlaid = Image.composite(Image.new("RGB", (w, h), rgb), base, coverage)
    if pictures is not None:
        overlaid = Image.alpha_composite(overlaid.convert("RGBA"), pictures).convert("RGB")

    warnings = [m for m in (planner_note, warning) if m]
    return OverlayResult(
        image=overlaid, text=text, proposal=rp.proposal, selection=selection,
        box=rp.proposal.box, box_px=box_px, padded_box_px=padded,
        text_bbox_px=bbox, text_box=NormBox.from_px(bbox, w, h), glyph_mask=glyph_mask,
        font=choice, font_chain=chain, fallback_runs=tuple(fallback_runs), font_size_px=fit.size, line_spacing_px=spacing, lines=fit.lines,
        color_hex=to_hex(rgb), color_rgb=rgb, color_source=source, color_contrast_p10=contrasts,
        recommended_color_hex=rec_hex, fits=fit.fits, fit_reason=fit_reason,
        placement_warning="; ".join(warnings) or None, bold=bold,
    )
