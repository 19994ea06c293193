"""The quality-check rules on stored records, and their settings (no services).

The stage-level behaviour (crafted images through the real stages) is in test_quality_checks.py;
here, the judge's verdicts (the tiny judge never gives one) and the thresholds as settings.
"""

from __future__ import annotations

import pytest

from variant_pipeline.config import SettingsError, load_settings
from variant_pipeline.quality import CHECKS, evaluate_all


def _check(name: str):
    return next(c for c in CHECKS if c.name == name)


@pytest.mark.parametrize(("verdict", "outcome", "summary"), [
    ({"on_brief": True, "issues": []}, "passed", "the judge says the ad matches the brief"),
    ({"on_brief": False, "issues": ["text covers the cup"]}, "failed",
     "the judge says the ad misses the brief (issues: text covers the cup)"),
    ({"on_brief": None, "unparsed": ["on_brief", "occlusion"]}, "not_evaluated",
     "not evaluated: the judge's answer gave no verdict (unparsed: on_brief, occlusion)"),
])
def test_judge_verdicts(verdict: dict, outcome: str, summary: str) -> None:
    result = _check("judge_on_brief").evaluate(verdict, load_settings())
    assert (result.outcome, result.summary) == (outcome, summary)


def test_thresholds_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    ocr = {"ocr_accuracy": 0.7, "recognized_text": "라떼", "original_text": "라떼 한 잔", "not_compared": ""}
    readability = {"contrast_ratio": 5.0, "contrast_ratio_p10": 4.6, "aa_threshold": 4.5, "aaa_threshold": 7.0,
                   "is_large_text": False}
    iou = {"max_iou_text": 0.1, "detection_count": 1, "argmax_text_label": "cup"}
    records = {"ocr_eval": ocr, "readability_eval": readability, "iou_eval": iou, "vlm_judge": None}

    defaults = {o.name: o.outcome for o in evaluate_all(records, load_settings())}
    assert defaults == {"judge_on_brief": "pending", "ocr_accuracy": "failed", "wcag_contrast_mean": "passed",
                        "wcag_contrast_worst_case": "passed", "text_clear_of_forbidden_objects": "failed"}

    monkeypatch.setenv("VP_CHECK_MIN_OCR_ACCURACY", "0.6")
    monkeypatch.setenv("VP_CHECK_WCAG_LEVEL", "aaa")
    monkeypatch.setenv("VP_CHECK_MAX_TEXT_IOU", "0.2")
    relaxed = {o.name: o for o in evaluate_all(records, load_settings())}
    assert relaxed["ocr_accuracy"].outcome == "passed"
    assert relaxed["wcag_contrast_mean"].outcome == "failed"
    assert relaxed["wcag_contrast_mean"].summary == "mean contrast 5.00:1 is below WCAG AAA for normal text (7:1)"
    assert relaxed["text_clear_of_forbidden_objects"].outcome == "passed"


def test_no_forbidden_object_passes_and_partial_ocr_says_what_was_not_compared() -> None:
    clear = _check("text_clear_of_forbidden_objects").evaluate({"max_iou_text": 0.0, "detection_count": 0},
                                                                 load_settings())
    assert (clear.outcome, clear.summary) == ("passed", "no forbidden object was detected in the image")
    ocr = _check("ocr_accuracy").evaluate({"ocr_accuracy": 1.0, "recognized_text": "할인", "original_text": "할인",
                                           "not_compared": "🔥"}, load_settings())
    assert ocr.outcome == "passed" and ocr.summary.endswith("pictographs 🔥 not compared (OCR cannot read them)")


@pytest.mark.parametrize(("name", "value", "message"), [
    ("VP_CHECK_WCAG_LEVEL", "A", "VP_CHECK_WCAG_LEVEL must be AA or AAA, got 'A'"),
    ("VP_CHECK_MIN_OCR_ACCURACY", "80", "VP_CHECK_MIN_OCR_ACCURACY must be between 0 and 1, got 80.0"),
    ("VP_CHECK_MAX_TEXT_IOU", "lots", "VP_CHECK_MAX_TEXT_IOU must be a number, got 'lots'"),
])
def test_bad_threshold_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                            message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        load_settings()
