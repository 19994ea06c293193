"""vlm_analyze / vlm_judge: parsers on realistic and garbage answers, and the stages on tiny LLaVA."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from variant_pipeline.work.types import Brief
from variant_pipeline.work.vlm import (
    AnalyzeInput,
    JudgeInput,
    VlmOptions,
    analyze_batch,
    font_prompt,
    judge_batch,
    judge_prompt,
    parse_description,
    parse_font,
    parse_judge,
    parse_score,
    parse_validation,
    rule_contradictions,
)

GOOD_VALIDATION = """Here is my assessment.
Match Score: 9/10
Consistent: Yes
Mismatch: No
Mismatch details: none
Verdict: Suitable
Reasoning: The copy promises a warm, hearty stew and the photo shows a steaming bowl of stew."""

CONTRADICTORY_VALIDATION = """**Score:** 8/10
**Consistent:** yes
**Mismatch:** yes
**Mismatch details:** The copy says ice cream but the photo shows a hot stew.
**Verdict:** suitable
**Reasoning:** Looks tasty."""

PARTIAL_VALIDATION = """The ad copy fits the photo quite well, I would rate it 7 out of 10.
Reasoning - the dish matches, but the setting is unclear."""

GARBAGE = "\ufffd\ufffdokX'Y/\ufffd\ufffdic\ufffd\ufffd'Y/\ufffdt\x16siz\ufffdentle"

DESCRIPTION = """Product: a bowl of kimchi stew
Characteristics: red broth, steaming, tofu and pork
Setting: dark wooden table
Mood: warm and comforting"""


def test_parse_description():
    d, unparsed = parse_description(DESCRIPTION)
    assert d.product == "a bowl of kimchi stew" and d.mood == "warm and comforting" and unparsed == []
    d, unparsed = parse_description("- **Product:** fried chicken\nno other lines")
    assert d.product == "fried chicken" and d.setting is None and "description.setting" in unparsed


def test_parse_validation_good():
    f = parse_validation(GOOD_VALIDATION, "Hearty stew for cold days", DESCRIPTION)
    assert f["relevance"] == 0.9 and f["valid"] is True and f["consistent"] is True
    assert f["mismatch"] is False and f["mismatch_details"] is None and f["unparsed"] == []
    assert f["reasoning"].startswith("The copy promises")


def test_parse_validation_contradictory_answer_is_not_valid():
    f = parse_validation(CONTRADICTORY_VALIDATION, "Cool ice cream for summer", DESCRIPTION)
    assert f["mismatch"] is True and f["valid"] is False
    assert f["relevance"] == 0.2  # a reported mismatch caps the score
    assert f["mismatch_details"].startswith("The copy says ice cream")
    assert any("contradicts itself" in i for i in f["issues"])
    assert any("suitable despite" in i for i in f["issues"])


def test_parse_validation_partial_marks_what_is_missing():
    f = parse_validation(PARTIAL_VALIDATION, "Hearty stew", DESCRIPTION)
    assert f["relevance"] == 0.7
    assert f["mismatch"] is None and f["consistent"] is None and f["valid"] is None
    assert {"mismatch", "consistent", "verdict"} <= set(f["unparsed"])
    assert f["reasoning"].startswith("the dish matches")


def test_parse_validation_garbage_is_unparsed_not_defaulted():
    f = parse_validation(GARBAGE, "Hearty stew", "")
    assert f["relevance"] is None and f["valid"] is None and f["mismatch"] is None
    assert {"relevance", "mismatch", "consistent", "verdict", "reasoning"} <= set(f["unparsed"])


def test_parse_validation_image_only():
    f = parse_validation("Verdict: not suitable\nIssues: blurry; cluttered table\nReasoning: hard to see.", None, "")
    assert f["valid"] is False and f["relevance"] is None and f["issues"] == ["blurry", "cluttered table"]
    assert f["unparsed"] == []


def test_spicy_rule_overrides_a_happy_model():
    copy = "For people who hate spicy food: our extra-spicy kimchi stew!"
    f = parse_validation(GOOD_VALIDATION, copy, DESCRIPTION)
    assert f["consistent"] is False and f["mismatch"] is True and f["valid"] is False
    assert f["relevance"] == 0.1
    # The product is spicy only in the photo description.
    assert rule_contradictions("Not for people who like spicy? Try this", "red, spicy broth")
    assert rule_contradictions("Perfect if you avoid spicy food", "a bowl of vanilla ice cream") == []
    assert rule_contradictions(None, "spicy") == []


@pytest.mark.parametrize("text,expected", [
    ("Match Score: 7/10", 0.7), ("score: 7-8/10", 0.75), ("I'd give it 3 out of 10.", 0.3),
    ("Score: 6", 0.6), ("Score: 42/10", None), ("no numbers here", None), (GARBAGE, None),
])
def test_parse_score(text, expected):
    assert parse_score(text) == expected


def test_parse_font_json_in_fence_with_escaped_underscores():
    answer = ('Sure!\n```json\n{"font\\_style": "bold", "font\\_name": "Black Han Sans", '
              '"font\\_size\\_category": "large", "font\\_color\\_hex": "#ffffff", '
              '"reasoning": "White bold text stands out on the dark table."}\n```')
    f = parse_font(answer)
    assert (f.style, f.name, f.size_category, f.color_hex) == ("bold", "Black Han Sans", "large", "FFFFFF")
    assert f.unparsed == ()


def test_parse_font_reads_the_colour_under_the_key_the_prompt_asks_for():
    assert '"text_color_hex"' in font_prompt("a bowl of stew", "맛있는 찌개", None)
    f = parse_font('{"font_style": "bold", "font_name": "Black Han Sans", "font_size_category": "large", '
                   '"text_color_hex": "#112233", "reasoning": "dark on light"}')
    assert f.color_hex == "112233" and f.unparsed == ()


def test_parse_font_rejects_fonts_without_hangul_and_italics():
    f = parse_font('{"font_style": "italic", "font_name": "Arial", "font_size_category": "Big", '
                   '"font_color_hex": "black", "reasoning": "classic"}')
    assert f.style is None and f.name is None
    assert "style:italic-has-no-hangul" in f.unparsed and "name:not-a-hangul-font" in f.unparsed
    assert f.size_category == "large" and f.color_hex == "000000"


def test_parse_font_from_lines_and_garbage():
    f = parse_font("Font style: sans serif\nFont name: nanum gothic\nSize: medium\nColor: #fa0\n")
    assert (f.style, f.name, f.size_category, f.color_hex) == ("sans-serif", "Nanum Gothic", "medium", "FFAA00")
    assert f.unparsed == ("reasoning",)
    g = parse_font(GARBAGE)
    assert g.style is g.name is g.size_category is g.color_hex is None
    assert set(g.unparsed) == {"style", "name", "size_category", "color_hex", "reasoning"}


def test_parse_judge_variants():
    fenced = ('```json\n{"on\\_brief": true, "occlusion": false, "contrast\\_ok": "yes", '
              '"cta\\_present": false, "issues": [], "reasoning": "Clear headline."}\n```')
    v = parse_judge(fenced)
    assert (v.on_brief, v.occlusion, v.contrast_ok, v.cta_present) == (True, False, True, False)
    assert v.issues == () and v.reasoning == "Clear headline." and v.unparsed == ()

    lines = "On brief: yes\nOcclusion: yes, the text covers the bowl\nContrast OK: no\nIssues: text on the food; low contrast"
    v = parse_judge(lines)
    assert (v.on_brief, v.occlusion, v.contrast_ok) == (True, True, False)
    assert v.cta_present is None and set(v.unparsed) == {"cta_present", "reasoning"}
    assert v.issues == ("text on the food", "low contrast")

    broken = 'Result: {"on_brief": false, "occlusion": true, "contrast_ok": tru'  # cut off mid-JSON
    v = parse_judge(broken)
    assert v.on_brief is False and v.occlusion is True and v.contrast_ok is None

    v = parse_judge(GARBAGE)
    assert v.on_brief is v.occlusion is v.contrast_ok is v.cta_present is None
    assert set(v.unparsed) == {"on_brief", "occlusion", "contrast_ok", "cta_present", "issues", "reasoning"}
    assert v.raw == GARBAGE


def test_prompts_carry_korean_copy_and_brief():
    p = font_prompt(DESCRIPTION, "따뜻한 한 그릇", "A warm bowl")
    assert "따뜻한 한 그릇" in p and "Hangul" in p and "Noto Sans KR" in p and "italic" in p
    j = judge_prompt(Brief("김치찌개", desc_eng="kimchi stew", ad_copy_eng="A warm bowl"), "따뜻한 한 그릇")
    assert "따뜻한 한 그릇" in j and "kimchi stew" in j and "A warm bowl" in j


@pytest.fixture(scope="module")
def vlm(tiny_models):
    from variant_pipeline.models.vlm import VlmBackend

    return VlmBackend.load(str(tiny_models["vlm_model"]), "cpu", "float32")


def _img(seed: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (64, 64, 3), dtype=np.uint8))


OPTS = VlmOptions(max_new_tokens=12, min_new_tokens=12)


def test_analyze_on_tiny_llava_never_crashes_and_marks_unparsed(vlm):
    inputs = [AnalyzeInput(_img(1), "Hearty stew for cold days", "따뜻한 찌개", seed=50),
              AnalyzeInput(_img(2), None, "따뜻한 찌개", seed=100)]
    results = analyze_batch(vlm, inputs, OPTS)
    assert len(results) == 2
    with_copy, image_only = results
    assert set(with_copy.raw) == {"analysis", "validation", "font"} and all(with_copy.raw.values())
    assert with_copy.relevance is None or 0 <= with_copy.relevance <= 1
    # Garbage answers: nothing is invented.
    if with_copy.relevance is None:
        assert "relevance" in with_copy.unparsed
    assert "따뜻한 찌개" in with_copy.prompts["font"]
    assert "Hearty stew" in with_copy.prompts["validation"]
    assert image_only.relevance is None and "No ad copy" in image_only.prompts["validation"]
    assert with_copy.to_dict()["font"]["unparsed"] == list(with_copy.font.unparsed)


def test_analyze_is_reproducible_and_font_seeds_differ(vlm):
    a = analyze_batch(vlm, [AnalyzeInput(_img(3), "Stew", "찌개", seed=50)], OPTS)[0]
    b = analyze_batch(vlm, [AnalyzeInput(_img(3), "Stew", "찌개", seed=50)], OPTS)[0]
    c = analyze_batch(vlm, [AnalyzeInput(_img(3), "Stew", "찌개", seed=100)], OPTS)[0]
    assert a.raw == b.raw
    assert a.raw["analysis"] == c.raw["analysis"]  # greedy
    assert a.raw["font"] != c.raw["font"]  # sampled with another seed


def test_judge_on_tiny_llava(vlm):
    brief = Brief("김치찌개", desc_eng="kimchi stew", ad_copy_eng="A warm stew")
    verdicts = judge_batch(vlm, [JudgeInput(_img(4), brief, "따뜻한 찌개"), JudgeInput(_img(5), brief, "따뜻한 찌개")], OPTS)
    assert len(verdicts) == 2
    for v in verdicts:
        assert v.raw and "kimchi stew" in v.prompt
        for name in ("on_brief", "occlusion", "contrast_ok", "cta_present"):
            assert getattr(v, name) in (True, False) or name in v.unparsed
    again = judge_batch(vlm, [JudgeInput(_img(4), brief, "따뜻한 찌개")], OPTS)[0]
    assert again.raw == verdicts[0].raw  # greedy by default: reproducible
