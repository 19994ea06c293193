"""The one lenient JSON reader of model answers, shared by the VLM and text-model parsers."""

from __future__ import annotations

import pytest

from variant_pipeline.work.copywriting import parse_feed_answer
from variant_pipeline.work.model_json import lookup, norm_key, parse_json_object
from variant_pipeline.work.vlm import parse_font, parse_judge


def test_reads_plain_fenced_python_and_listed_objects() -> None:
    # From the copywriting tests.
    assert parse_json_object('{"a": 1}').value == {"a": 1}
    p = parse_json_object("Here you go:\n```\n{'a': 'it', 'b': true, 'c': null,}\n```")
    assert p.value == {"a": "it", "b": True, "c": None} and p.repaired
    assert parse_json_object('[{"a": 1}]').value == {"a": 1}
    assert parse_json_object('text {"a": "}{"} more').value == {"a": "}{"}
    assert parse_json_object("“a”: 1").value is None
    # From the VLM tests: a fenced object wins over an earlier bare one; Python literals survive.
    assert parse_json_object("x {'a': True,} y").value == {"a": True}
    assert parse_json_object('noise {"a": 1} ```json\n{"b": 2}\n```').value == {"b": 2}
    assert parse_json_object("{{{{ not json").value is None


@pytest.mark.parametrize("bad", ["", None, "no json here", "{{{{", "[1, 2]", "\ufffd{\ufffd", "{\"a\": }"])
def test_no_object_gives_none_and_a_reason(bad: str | None) -> None:
    p = parse_json_object(bad)
    assert p.value is None and p.error


def test_plain_object_is_not_marked_repaired() -> None:
    assert parse_json_object('  {"a": 1}  ').repaired is False
    assert parse_json_object('Sure! {"a": 1}').repaired is True


def test_fences_with_and_without_language_tag_and_unterminated() -> None:
    assert parse_json_object('```json\n{"a": 1}\n```').value == {"a": 1}
    assert parse_json_object('```JSON {"a": 2}```').value == {"a": 2}
    assert parse_json_object('Answer:\n```\n{"a": 3}\n').value == {"a": 3}


def test_trailing_text_and_nested_braces() -> None:
    answer = 'Verdict: {"on_brief": true, "detail": {"box": {"x": 1}}, "note": "a } in text"} Hope it helps {'
    assert parse_json_object(answer).value == {"on_brief": True, "detail": {"box": {"x": 1}}, "note": "a } in text"}


def test_repairs_typographic_quotes_escaped_underscores_and_cut_off_answers() -> None:
    assert parse_json_object("{“on\\_brief”: true}").value == {"on_brief": True}
    assert parse_json_object('{"instagram_ad_copy": "오늘 저녁은 치킨').value == {"instagram_ad_copy": "오늘 저녁은 치킨"}


def test_json_words_inside_strings_stay_text() -> None:
    # The Python-literal reading maps true/false/null names, never the words inside strings.
    assert parse_json_object("{'a': 'true story', 'b': null}").value == {"a": "true story", "b": None}


@pytest.mark.parametrize("key", ["on_brief", "On-Brief", "onBrief", "on brief", " ON__BRIEF ", "on.brief"])
def test_one_key_normalisation(key: str) -> None:
    assert norm_key(key) == "onbrief"
    assert lookup({key: True}, "on_brief") is True


def test_key_normalisation_keeps_non_latin_letters() -> None:
    assert norm_key("번역 결과") == "번역결과"
    assert lookup({"번역": "x", "text": "y"}, "text") == "y"


def test_lookup_skips_empty_values_and_looks_one_level_down() -> None:
    assert lookup({"name": "", "font": "Nanum Gothic"}, "name", "font") == "Nanum Gothic"
    assert lookup({"verdict": {"Contrast-OK": False}}, "contrast_ok") is False
    assert lookup({"a": None}, "a") is None


def test_both_callers_read_keys_by_the_same_rule() -> None:
    # The VLM judge and font parsers...
    verdict = parse_judge('{"On-Brief": true, "OCCLUSION": "no", "contrastOk": "yes", "CTA present": false, '
                          '"Issues": [], "Reasoning": "fine"}')
    assert (verdict.on_brief, verdict.occlusion, verdict.contrast_ok, verdict.cta_present) == (True, False, True, False)
    assert verdict.unparsed == ()
    font = parse_font('```json\n{"Font-Name": "Nanum Gothic", "FONT STYLE": "sans serif"}\n```')
    assert font.name is not None and font.style == "sans-serif"
    # ... and the text-model feed parser.
    feed = parse_feed_answer('{"Instagram-Ad-Copy": "오늘 저녁은 치킨 🍗", "HashTags": "#치킨 #맛집"}')
    assert feed.instagram_ad_copy == "오늘 저녁은 치킨 🍗" and feed.hashtags == ["#치킨", "#맛집"]
