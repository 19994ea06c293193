"""ocr_eval: the real Tesseract engine reads clean renders back; failures are errors, not zeros."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.imaging import box_mask, detection, gradient, paint_food, solid
from variant_pipeline.config import load_settings
from variant_pipeline.models.ocr import TesseractOcr
from variant_pipeline.quality import CHECKS
from variant_pipeline.work.ocr import (
    OcrError,
    OcrReading,
    OcrUnavailableError,
    crop_box,
    evaluate_ocr,
    levenshtein,
    split_pictographs,
    text_metrics,
)
from variant_pipeline.work.overlay import render_overlay
from variant_pipeline.work.planner import plan_placements

COPY = [
    "바삭한 치킨 한입",
    "Crispy chicken, one bite",
    "오늘만 특가! 수제 버거 20% 할인",
]


@pytest.fixture(scope="module")
def engine() -> TesseractOcr:
    eng = TesseractOcr(cmd="tesseract")
    eng.check()  # fails the module loudly, with install instructions, if Tesseract is missing
    return eng


def test_levenshtein() -> None:
    assert levenshtein("", "") == 0
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("바삭한치킨", "바삭치킨") == 1
    assert levenshtein("abc", "") == 3 and levenshtein("", "abc") == 3


def test_text_metrics_follow_the_spec() -> None:
    m = text_metrics("바삭한 치킨 한입", "바삭한 치킨 한입")
    assert m["ocr_accuracy"] == 1.0 and m["edit_distance"] == 0 and m["similarity"] == 1.0
    m = text_metrics("바삭한 치킨 한입", "바삭한 치긴 한입")
    assert m["word_match_rate"] == pytest.approx(2 / 3)
    assert m["character_match_rate"] == pytest.approx(6 / 7)
    assert m["ocr_accuracy"] == pytest.approx((6 / 7 + 2 / 3) / 2)
    assert m["edit_distance"] == 1
    m = text_metrics("바삭한 치킨", "")
    assert m["ocr_accuracy"] == 0.0 and m["edit_distance"] == 5
    with pytest.raises(ValueError):
        text_metrics("  ", "abc")


@pytest.mark.parametrize("size", [256, 1080])
@pytest.mark.parametrize("text", COPY)
def test_real_engine_reads_clean_renders(engine: TesseractOcr, size: int, text: str) -> None:
    s = size / 256
    food = (60 * s, 120 * s, 200 * s, 250 * s)
    img = paint_food(gradient(size, seed=1), food)
    plan = plan_placements(size, size, [detection(food, size, size)], box_mask(size, size, food))
    r = render_overlay(img, text, plan)
    assert r.fits
    m = evaluate_ocr(engine, r.image, r.text_bbox_px, text, font_size_px=r.font_size_px)
    assert m.ocr_accuracy >= 0.9, (m.recognized_text, m.ocr_accuracy)
    assert m.ocr_confidence > 0.5
    assert m.engine == "tesseract"


def test_real_engine_reads_light_text_on_dark(engine: TesseractOcr) -> None:
    plan = plan_placements(256, 256, [], None)
    r = render_overlay(solid(256, 256, (25, 30, 45)), "바삭한 치킨 한입", plan)
    assert r.color_rgb == (255, 255, 255)
    m = evaluate_ocr(engine, r.image, r.text_bbox_px, "바삭한 치킨 한입", font_size_px=r.font_size_px)
    assert m.ocr_accuracy >= 0.9, m.recognized_text


def test_crop_covers_the_tight_box_with_a_margin() -> None:
    assert crop_box((256, 256), (50, 40, 150, 70)) == (46, 36, 154, 74)
    assert crop_box((256, 256), (0, 0, 256, 30)) == (0, 0, 256, 34)


def test_missing_binary_is_a_clear_error(tmp_path) -> None:
    eng = TesseractOcr(cmd=str(tmp_path / "no-such-tesseract"))
    with pytest.raises(OcrUnavailableError, match="apt-get install tesseract-ocr"):
        evaluate_ocr(eng, gradient(64), (0, 0, 64, 64), "바삭한 치킨")


def test_missing_language_is_a_clear_error() -> None:
    eng = TesseractOcr(cmd="tesseract", languages="kor+xyz")
    with pytest.raises(OcrUnavailableError, match="xyz") as err:
        eng.check()
    assert "tesseract-ocr-xyz" in str(err.value)


def test_missing_tessdata_is_a_clear_error(tmp_path) -> None:
    eng = TesseractOcr(cmd="tesseract", tessdata_dir=str(tmp_path))
    with pytest.raises(OcrUnavailableError, match="tesseract-ocr-kor"):
        eng.check()


class _FailingEngine:
    name = "failing"

    def read(self, image: Image.Image, *, text_height_px: float | None = None) -> OcrReading:
        raise OcrError("engine crashed")


class _FixedEngine:
    name = "fixed"

    def __init__(self, text: str) -> None:
        self.text = text
        self.seen: list[tuple[int, int]] = []

    def read(self, image: Image.Image, *, text_height_px: float | None = None) -> OcrReading:
        self.seen.append(image.size)
        return OcrReading(text=self.text, confidence=0.8, words=())


def test_engine_errors_propagate_instead_of_zero_scores() -> None:
    with pytest.raises(OcrError, match="crashed"):
        evaluate_ocr(_FailingEngine(), gradient(64), (0, 0, 64, 64), "바삭한 치킨")


def test_metrics_plumbing_with_a_fixed_reading() -> None:
    eng = _FixedEngine("바삭한 치킨\n한입")
    m = evaluate_ocr(eng, gradient(128), (20, 20, 100, 50), "바삭한 치킨 한입")
    assert m.recognized_text == "바삭한 치킨 한입" and m.ocr_accuracy == 1.0
    assert eng.seen == [(88, 38)]  # the tight box plus a 4-px margin on each side
    assert m.to_dict()["crop_box_px"] == [16, 16, 104, 54]
    with pytest.raises(ValueError, match="empty"):
        evaluate_ocr(eng, gradient(128), (20, 20, 100, 50), "")


def _tsv(rows: list[tuple[int, str, int, int, int, int]]) -> str:
    head = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    lines = [head]
    for i, (line, text, left, top, width, height) in enumerate(rows):
        lines.append(f"5\t1\t1\t1\t{line}\t{i}\t{left}\t{top}\t{width}\t{height}\t90\t{text}")
    return "\n".join(lines) + "\n"


def test_split_hangul_syllables_are_rejoined_but_real_spaces_kept() -> None:
    from variant_pipeline.models.ocr import _parse_tsv

    # Tesseract's Korean model often splits "주문하면" into syllables a few pixels apart;
    # the space before "배달비" is much wider than that.
    reading = _parse_tsv(_tsv([
        (1, "지금", 40, 10, 110, 60), (1, "주", 180, 10, 50, 60), (1, "문", 236, 10, 50, 60),
        (1, "하면", 292, 10, 100, 60), (1, "배달비", 430, 10, 150, 60),
        (2, "chicken", 40, 90, 150, 45), (2, "one", 196, 90, 60, 45),
    ]))
    assert reading.text == "지금 주문하면 배달비\nchicken one"
    assert reading.confidence == pytest.approx(0.9)


def test_pictographs_are_drawn_but_not_held_against_the_ocr_score(engine: TesseractOcr) -> None:
    assert split_pictographs("오늘만 50% 할인 ☕🔥 Café 👍🏽 ❤️") == ("오늘만 50% 할인 Café", "☕🔥👍🏽❤️")
    size = 256
    food = (60, 120, 200, 250)
    img = paint_food(gradient(size, seed=1), food)
    plan = plan_placements(size, size, [detection(food, size, size)], box_mask(size, size, food))
    text = "바삭한 치킨 🔥"
    r = render_overlay(img, text, plan)
    m = evaluate_ocr(engine, r.image, r.text_bbox_px, text, font_size_px=r.font_size_px)
    assert (m.original_text, m.not_compared) == ("바삭한 치킨", "🔥")
    assert m.ocr_accuracy >= 0.9, (m.recognized_text, m.ocr_accuracy)
    # Copy of pictographs only: nothing to compare, and no score pretends otherwise.
    only = evaluate_ocr(engine, r.image, r.text_bbox_px, "🔥 ☕")
    assert (only.ocr_accuracy, only.original_text, only.not_compared) == (None, "", "🔥☕")
    [ocr_check] = [c for c in CHECKS if c.name == "ocr_accuracy"]
    outcome = ocr_check.evaluate(only.to_dict(), load_settings())
    assert outcome.outcome == "not_evaluated"
    assert outcome.summary == "not evaluated: the copy is only pictographs (🔥☕), which a text OCR engine cannot read"
