"""The quality checks on each variant: what each one means and how it is decided, defined once.

A check reads what its evaluation stage stored (the ``evaluations`` metrics of OCR, readability
and IoU, the judge's verdict) and answers ``passed``, ``failed`` or ``not_evaluated`` with one
line saying why. ``not_evaluated`` is for a measurement that cannot answer the question (copy
made only of pictographs, a verdict the judge's answer did not contain): it is never a pass.
The Dagster asset checks (``assets/checks.py``), the job gallery and the ``results`` command all
decide through ``evaluate``, so the UI and the results contract cannot disagree.
Nothing here knows Dagster or SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from variant_pipeline.config import Settings

Outcome = Literal["passed", "failed", "not_evaluated", "pending"]


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    stage: str  # the evaluation stage whose output the check reads
    outcome: Outcome
    summary: str  # one line: the measured value against the threshold, or why there is no answer
    value: float | bool | None = None
    threshold: float | None = None

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    def line(self) -> str:
        """The outcome and its summary (a summary without an answer already starts with why)."""
        return f"{self.outcome}: {self.summary}" if self.outcome in ("passed", "failed") else self.summary


Rule = Callable[[Mapping[str, Any], Settings], CheckOutcome]


@dataclass(frozen=True)
class QualityCheck:
    name: str
    stage: str
    description: str
    rule: Rule

    def evaluate(self, record: Mapping[str, Any] | None, settings: Settings) -> CheckOutcome:
        """The outcome from the stage's stored record; ``pending`` while the stage has not run."""
        if record is None:
            return CheckOutcome(self.name, self.stage, "pending", f"{self.stage} has not run yet")
        return self.rule(record, settings)


def _number(record: Mapping[str, Any], key: str) -> float | None:
    value = record.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _ocr_accuracy(record: Mapping[str, Any], settings: Settings) -> CheckOutcome:
    name, stage, threshold = "ocr_accuracy", "ocr_eval", settings.check_min_ocr_accuracy
    accuracy = _number(record, "ocr_accuracy")
    skipped = record.get("not_compared") or ""
    if accuracy is None:
        reason = (f"the copy is only pictographs ({skipped}), which a text OCR engine cannot read"
                  if skipped else "the OCR evaluation recorded no accuracy")
        return CheckOutcome(name, stage, "not_evaluated", f"not evaluated: {reason}", None, threshold)
    verdict = "passed" if accuracy >= threshold else "failed"
    summary = (f"OCR accuracy {accuracy:.2f} {'>=' if verdict == 'passed' else '<'} {threshold:.2f}; "
               f"read {record.get('recognized_text', '')!r} for {record.get('original_text', '')!r}")
    if skipped:
        summary += f"; pictographs {skipped} not compared (OCR cannot read them)"
    return CheckOutcome(name, stage, verdict, summary, accuracy, threshold)


def _contrast(key: str, what: str) -> Rule:
    def rule(record: Mapping[str, Any], settings: Settings) -> CheckOutcome:
        name = "wcag_contrast_mean" if key == "contrast_ratio" else "wcag_contrast_worst_case"
        level = settings.check_wcag_level
        threshold = _number(record, "aa_threshold" if level == "AA" else "aaa_threshold")
        ratio = _number(record, key)
        if ratio is None or threshold is None:
            return CheckOutcome(name, "readability_eval", "not_evaluated",
                                f"not evaluated: the readability evaluation recorded no {what} contrast")
        size = "large" if record.get("is_large_text") else "normal"
        verdict = "passed" if ratio >= threshold else "failed"
        return CheckOutcome(
            name, "readability_eval", verdict,
            f"{what} contrast {ratio:.2f}:1 {'meets' if verdict == 'passed' else 'is below'} WCAG {level} "
            f"for {size} text ({threshold:g}:1)", ratio, threshold)

    return rule


def _text_clear(record: Mapping[str, Any], settings: Settings) -> CheckOutcome:
    name, stage, threshold = "text_clear_of_forbidden_objects", "iou_eval", settings.check_max_text_iou
    iou = _number(record, "max_iou_text")
    if iou is None:
        return CheckOutcome(name, stage, "not_evaluated", "not evaluated: the IoU evaluation recorded no overlap")
    count = int(record.get("detection_count") or 0)
    if count == 0:
        return CheckOutcome(name, stage, "passed", "no forbidden object was detected in the image", iou, threshold)
    label = record.get("argmax_text_label") or "a forbidden object"
    verdict = "passed" if iou <= threshold else "failed"
    return CheckOutcome(name, stage, verdict,
                        f"text box overlaps {label} with IoU {iou:.3f} "
                        f"({'within' if verdict == 'passed' else 'above'} {threshold:g}; "
                        f"{count} forbidden detection{'s' if count != 1 else ''})", iou, threshold)


def _judge(record: Mapping[str, Any], settings: Settings) -> CheckOutcome:
    name, stage = "judge_on_brief", "vlm_judge"
    on_brief = record.get("on_brief")
    if not isinstance(on_brief, bool):
        unparsed = ", ".join(record.get("unparsed") or []) or "on_brief"
        return CheckOutcome(name, stage, "not_evaluated",
                            f"not evaluated: the judge's answer gave no verdict (unparsed: {unparsed})")
    issues = "; ".join(str(i) for i in record.get("issues") or [])
    summary = "the judge says the ad matches the brief" if on_brief else "the judge says the ad misses the brief"
    return CheckOutcome(name, stage, "passed" if on_brief else "failed",
                        summary + (f" (issues: {issues})" if issues else ""), on_brief)


CHECKS: tuple[QualityCheck, ...] = (
    QualityCheck("judge_on_brief", "vlm_judge",
                 "The vision-language judge's verdict is that the overlaid ad matches the brief.", _judge),
    QualityCheck("ocr_accuracy", "ocr_eval",
                 "OCR reads the drawn copy back with accuracy at or above VP_CHECK_MIN_OCR_ACCURACY "
                 "(pictographs are not compared: OCR cannot read them).", _ocr_accuracy),
    QualityCheck("wcag_contrast_mean", "readability_eval",
                 "The contrast of the text colour against the mean background under the text meets "
                 "WCAG VP_CHECK_WCAG_LEVEL for its size.", _contrast("contrast_ratio", "mean")),
    QualityCheck("wcag_contrast_worst_case", "readability_eval",
                 "The worst-case (10th percentile) contrast against the background pixels under the text "
                 "meets WCAG VP_CHECK_WCAG_LEVEL for its size.", _contrast("contrast_ratio_p10", "worst-case")),
    QualityCheck("text_clear_of_forbidden_objects", "iou_eval",
                 "The text box overlaps no forbidden object (person, food, ...) with IoU above "
                 "VP_CHECK_MAX_TEXT_IOU.", _text_clear),
)
CHECK_STAGES: tuple[str, ...] = tuple(dict.fromkeys(c.stage for c in CHECKS))


def checks_of(stage: str) -> tuple[QualityCheck, ...]:
    return tuple(c for c in CHECKS if c.stage == stage)


def evaluate_all(records: Mapping[str, Mapping[str, Any] | None], settings: Settings,
                 stages: tuple[str, ...] = CHECK_STAGES) -> list[CheckOutcome]:
    """Every check of ``stages`` against ``records`` (stage name -> its stored record, or None)."""
    return [c.evaluate(records.get(c.stage), settings) for c in CHECKS if c.stage in stages]
