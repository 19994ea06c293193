"""overlay: placement choice, fitting and wrapping, colour by measured contrast, recorded geometry."""

from __future__ import annotations

import numpy as np
import pytest

from tests.imaging import box_mask, detection, gradient, needs_emoji, paint_food, solid
from variant_pipeline.work.fonts import ChainedFont, missing_glyphs, resolve_font, resolve_font_chain
from variant_pipeline.work.iou import box_iou
from variant_pipeline.work.overlay import (
    OverlayParams,
    proposal_group,
    rank_proposals,
    render_overlay,
    wrap_text,
)
from variant_pipeline.work.planner import ForbiddenPosition, Proposal, plan_placements
from variant_pipeline.work.readability import contrast_ratio
from variant_pipeline.work.types import FontRecommendation, NormBox

KOREAN = "바삭한 치킨 한입"
FOOD = (60, 120, 200, 250)


@pytest.fixture(autouse=True)
def _no_env_font(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VP_FONT_PATH", raising=False)


def _scene(size: int = 256, food: tuple[int, int, int, int] = FOOD):
    scale = size / 256
    box = tuple(v * scale for v in food)
    img = paint_food(gradient(size), box)
    plan = plan_placements(size, size, [detection(box, size, size)], box_mask(size, size, box))
    return img, plan, box


def _prop(source: str, box: NormBox, score: float = 1.0, iou: float = 0.0) -> Proposal:
    return Proposal(source, source, box, score, iou, iou, 0.0)


def test_render_records_what_was_drawn() -> None:
    img, plan, food = _scene()
    r = render_overlay(img, KOREAN, plan)
    assert r.fits and r.fit_reason is None
    assert r.proposal is not None and r.proposal in plan.proposals
    assert r.lines == (KOREAN,) or "".join(r.lines).replace(" ", "") == KOREAN.replace(" ", "")
    # The tight box is the glyph mask's extent, inside the padded placement box.
    ys, xs = np.nonzero(r.glyph_mask)
    assert r.text_bbox_px == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    px1, py1, px2, py2 = r.padded_box_px
    x1, y1, x2, y2 = r.text_bbox_px
    assert px1 <= x1 and py1 <= y1 and x2 <= px2 and y2 <= py2
    assert r.text_box == NormBox.from_px(r.text_bbox_px, 256, 256)
    # Only glyph pixels changed, and fully covered glyph pixels carry exactly the drawn colour.
    before, after = np.asarray(img), np.asarray(r.image)
    changed = (before != after).any(axis=2)
    assert not (changed & ~r.glyph_mask).any()
    assert (after[r.glyph_mask] == r.color_rgb).all(axis=1).any()
    assert r.color_hex == "".join(f"{v:02x}" for v in r.color_rgb)
    # The text keeps off the food.
    assert box_iou(r.text_box, NormBox.from_px(food, 256, 256)) == 0.0
    assert missing_glyphs(r.font.path, KOREAN) == []
    d = r.to_dict()
    assert d["font_size_px"] == r.font_size_px and d["text_color"] == r.color_hex and d["fits"]


def test_deterministic() -> None:
    img, plan, _ = _scene()
    a = render_overlay(img, KOREAN, plan)
    b = render_overlay(img.copy(), KOREAN, plan)
    assert a.to_dict() == b.to_dict()
    assert a.image.tobytes() == b.image.tobytes()
    assert np.array_equal(a.glyph_mask, b.glyph_mask)


def test_font_sizes_scale_with_the_image() -> None:
    assert OverlayParams().scaled(1080, 1080) == (96, 28, 2, 6)  # the original's numbers
    hi, lo, step, spacing = OverlayParams().scaled(256, 256)
    assert (hi, lo) == (23, 10) and step >= 1 and spacing >= 1
    assert OverlayParams(reference_px=None).scaled(256, 256) == (96, 28, 2, 6)
    img, plan, _ = _scene(1080)
    r = render_overlay(img, KOREAN, plan)
    assert 28 <= r.font_size_px <= 96 and r.fits


def test_dark_background_gets_light_text_and_vice_versa() -> None:
    plan = plan_placements(256, 256, [], None)
    dark = render_overlay(solid(256, 256, (20, 25, 40)), KOREAN, plan)
    light = render_overlay(solid(256, 256, (235, 230, 220)), KOREAN, plan)
    assert dark.color_rgb == (255, 255, 255) and dark.color_source == "white"
    assert light.color_rgb == (0, 0, 0) and light.color_source == "black"


def test_recommended_colour_kept_when_it_passes_aa_else_replaced() -> None:
    plan = plan_placements(256, 256, [], None)
    navy = solid(256, 256, (10, 20, 60))
    kept = render_overlay(navy, KOREAN, plan, FontRecommendation(color_hex="ffd700"))
    assert kept.color_source == "recommended" and kept.color_hex == "ffd700"
    assert contrast_ratio((255, 215, 0), (10, 20, 60)) >= 4.5
    replaced = render_overlay(navy, KOREAN, plan, FontRecommendation(color_hex="202020"))
    assert replaced.color_source == "white" and replaced.recommended_color_hex == "202020"
    garbage = render_overlay(navy, KOREAN, plan, FontRecommendation(color_hex="not-a-colour"))
    assert garbage.color_source == "white"


def test_font_recommendation_is_honoured_with_hangul() -> None:
    img, plan, _ = _scene()
    r = render_overlay(img, KOREAN, plan, FontRecommendation(style="serif"))
    assert r.font is not None and missing_glyphs(r.font.path, KOREAN) == []
    assert r.font.source in ("style", "name", "default", "fc-list")


def test_wrap_breaks_long_korean_words_between_characters() -> None:
    font = resolve_font("가").load(20)
    text = "바삭바삭한치킨이오늘만특가입니다 지금주문하세요"
    lines = wrap_text(text, font, 100)
    assert len(lines) > 2
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    assert all(draw.textlength(line, font=font) <= 100 for line in lines)
    assert wrap_text("첫 줄\n둘째 줄", font, 500) == ["첫 줄", "둘째 줄"]


def test_text_that_cannot_fit_is_reported() -> None:
    props = [_prop("grid_top_left_w50_h12", NormBox(0, 0, 0.5, 0.12))]
    long_text = "오늘만 특가 바삭한 치킨 한입 " * 8
    r = render_overlay(gradient(256), long_text, props)
    assert not r.fits and r.fit_reason and "minimum size" in r.fit_reason
    assert r.font_size_px == OverlayParams().scaled(256, 256)[1]


def test_moves_to_the_next_proposal_when_text_does_not_fit() -> None:
    small = _prop("grid_top_left_w50_h12", NormBox(0, 0, 0.5, 0.12), score=2.0)
    big = _prop("grid_bottom_left_w100_h40", NormBox(0, 0.6, 1.0, 0.4), score=0.5)
    text = "오늘만 특가 바삭한 치킨 한입 지금 바로 주문하세요"
    r = render_overlay(gradient(256), text, [small, big],
                       params=OverlayParams(min_font_floor_px=16, max_font_px=96))
    assert r.fits and r.proposal == big and "did not fit" in r.selection


def test_ranking_rules() -> None:
    top = _prop("grid_top_left_w80_h18", NormBox(0, 0, 0.8, 0.18), 1.2)
    bottom = _prop("grid_bottom_left_w80_h18", NormBox(0, 0.82, 0.8, 0.18), 1.0)
    free = _prop("max_size_free_area", NormBox(0, 0, 1, 0.35), 1.0)
    occluded = _prop("rule_center", NormBox(0.2, 0.1, 0.6, 0.2), 5.0, iou=0.3)
    food_top = ForbiddenPosition(0.5, 0.3, True, True, False)
    ranked, warn = rank_proposals([top, bottom, free, occluded], "짧은 문구", food_top, OverlayParams())
    assert warn is None and occluded not in [r.proposal for r in ranked]
    assert ranked[0].proposal == bottom  # food at the top: bottom +0.3
    long_text = "가" * 120
    ranked, _ = rank_proposals([top, bottom, free], long_text, None, OverlayParams())
    assert ranked[0].proposal == free  # long copy goes to the largest free area
    ranked, warn = rank_proposals([occluded], "짧은 문구", None, OverlayParams())
    assert warn and ranked[0].proposal == occluded
    assert proposal_group("grid_mid_top_w80_h18") == "top" and proposal_group("rule_center") == "center"


def test_infeasible_plan_is_carried_as_a_warning() -> None:
    plan = plan_placements(256, 256, [detection((0, 0, 256, 256), 256, 256)], None)
    r = render_overlay(gradient(256), KOREAN, plan)
    assert r.placement_warning and "planner infeasible" in r.placement_warning


def test_inputs_from_another_image_or_empty_are_rejected() -> None:
    plan = plan_placements(512, 512, [], None)
    with pytest.raises(ValueError, match="own image"):
        render_overlay(gradient(256), KOREAN, plan)
    with pytest.raises(ValueError, match="empty"):
        render_overlay(gradient(256), "  ", plan_placements(256, 256, [], None))
    with pytest.raises(ValueError, match="no placement proposals"):
        render_overlay(gradient(256), KOREAN, [])


@needs_emoji
def test_emoji_are_drawn_in_their_own_colours_from_a_fallback_font() -> None:
    img, plan, _ = _scene()
    text = "오늘만 50% 할인 ☕🔥 Café Crème"
    r = render_overlay(img, text, plan)
    layout = r.to_dict()
    assert [f["chars"] for f in layout["fallback_fonts"]] == ["☕🔥"]
    [run] = layout["fallback_runs"]
    assert run["text"] == "☕🔥"
    # The recorded geometry still covers everything drawn, emoji included.
    before, after = np.asarray(img).astype(int), np.asarray(r.image).astype(int)
    changed = (before != after).any(axis=2)
    assert not (changed & ~r.glyph_mask).any()
    ys, xs = np.nonzero(r.glyph_mask)
    assert r.text_bbox_px == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    x1, y1, x2, y2 = run["box_px"]
    assert r.text_bbox_px[0] <= x1 and x2 <= r.text_bbox_px[2]
    # Inside the emoji box: colours of the emoji's own, not the text colour.
    region = after[y1:y2, x1:x2][changed[y1:y2, x1:x2]]
    assert len(region) > 0.3 * (x2 - x1) * (y2 - y1)
    assert (np.abs(region - np.array(r.color_rgb)).sum(axis=1) > 60).mean() > 0.5


def test_a_chain_lays_out_text_where_one_font_would() -> None:
    # The run-by-run layout follows PIL's multiline rules, so fallback text sits where plain text would.
    from PIL import Image, ImageDraw

    lines = ["바삭한 치킨", "한입 Crispy"]
    chain = resolve_font_chain(" ".join(lines))
    for size in (20, 33, 48):
        plain = ImageDraw.Draw(Image.new("L", (1, 1))).multiline_textbbox(
            (0, 0), "\n".join(lines), font=chain.primary.load(size), anchor="mm", spacing=5, align="center")
        chained = ChainedFont(chain, size).bbox(lines, 5)
        assert all(abs(a - b) <= 1 for a, b in zip(plain, chained, strict=True)), (size, plain, chained)
