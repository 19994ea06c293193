"""ocr_eval: read the drawn text back and compare it with the intended copy (the original's metrics).

The original used EasyOCR on a crop of the *placement* box and turned any OCR exception into
zero scores. Here the engine (``variant_pipeline.models.ocr.TesseractOcr``, passed in) raises
``OcrUnavailableError`` saying what to install when it is missing, never a zero. The crop is the
*tight* text box plus a margin, so text that overflowed its placement box is still read, and
small text is upscaled (Tesseract reads glyphs under ~20 px badly).
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image


class OcrError(RuntimeError):
    """The OCR engine ran and failed."""


class OcrUnavailableError(OcrError):
    """The OCR engine or one of its languages is not installed."""


@dataclass(frozen=True)
class OcrWord:
    text: str
    confidence: float  # 0..1
    box_px: tuple[int, int, int, int]  # in the image given to the engine
    line: int  # running line number, in reading order


@dataclass(frozen=True)
class OcrReading:
    text: str  # lines joined by "\n", words by " "
    confidence: float  # mean word confidence 0..1; 0 when nothing was read
    words: tuple[OcrWord, ...]


class OcrEngine(Protocol):
    name: str

    def read(self, image: Image.Image, *, text_height_px: float | None = None) -> OcrReading:
        """Read a crop that contains only the text block. ``text_height_px``: the glyph size in
        the crop, if known, so the engine can rescale to what it reads best."""
        ...

def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _squash(s: str) -> str:
    return "".join(s.split())


@dataclass(frozen=True)
class OcrMetrics:
    engine: str
    original_text: str
    recognized_text: str  # words joined by single spaces (lines too), as the original stored it
    ocr_confidence: float
    # The comparison; None when the copy is only pictographs (nothing OCR could be held to).
    character_match_rate: float | None  # SequenceMatcher ratio, whitespace removed
    word_match_rate: float | None  # share of original words found verbatim among the recognized words
    ocr_accuracy: float | None  # mean of the two
    edit_distance: int | None  # Levenshtein, whitespace removed
    similarity: float | None  # SequenceMatcher ratio of the raw strings
    crop_box_px: tuple[int, int, int, int]
    scale_hint_px: float | None
    # Pictographs (emoji, ☕) drawn but left out of the comparison: a text OCR engine cannot read them.
    not_compared: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["crop_box_px"] = list(self.crop_box_px)
        return d


def split_pictographs(text: str) -> tuple[str, str]:
    """``text`` without its pictographs (Unicode category So: emoji, dingbats; with their variation
    selectors and joiners), and the pictographs removed. Whitespace left behind is collapsed."""
    kept, removed = [], []
    for ch in text:
        if unicodedata.category(ch) == "So" or ch in "\u200d\ufe0e\ufe0f" or "\U0001f3fb" <= ch <= "\U0001f3ff":
            removed.append(ch)
        else:
            kept.append(ch)
    return " ".join("".join(kept).split()), "".join(removed)


def text_metrics(original: str, recognized: str) -> dict[str, float | int]:
    """The original's metrics between the intended and the recognized text (NFC-normalized):
    ``ocr_accuracy`` is the mean of the character match rate (difflib ratio without spaces) and the
    exact-word match rate."""
    orig = unicodedata.normalize("NFC", original)
    rec = unicodedata.normalize("NFC", recognized)
    oc, rc = _squash(orig), _squash(rec)
    if not oc:
        raise ValueError("the original text is empty: nothing to compare the OCR result with")
    if not rc:
        return {"character_match_rate": 0.0, "word_match_rate": 0.0, "ocr_accuracy": 0.0,
                "edit_distance": len(oc), "similarity": 0.0}
    char_rate = difflib.SequenceMatcher(None, oc, rc).ratio()
    orig_words = orig.split()
    rec_words = set(rec.split())
    word_rate = sum(1 for wd in orig_words if wd in rec_words) / len(orig_words)
    return {
        "character_match_rate": char_rate,
        "word_match_rate": word_rate,
        "ocr_accuracy": (char_rate + word_rate) / 2,
        "edit_distance": levenshtein(oc, rc),
        "similarity": difflib.SequenceMatcher(None, orig, rec).ratio(),
    }


def crop_box(
    size: tuple[int, int], text_bbox_px: Sequence[int], margin_frac: float = 0.15, min_margin_px: int = 4
) -> tuple[int, int, int, int]:
    """The tight text box grown by a margin on every side, clamped to the image."""
    w, h = size
    x1, y1, x2, y2 = (int(v) for v in text_bbox_px)
    m = max(min_margin_px, round(margin_frac * min(x2 - x1, y2 - y1)))
    return (max(0, x1 - m), max(0, y1 - m), min(w, x2 + m), min(h, y2 + m))


def evaluate_ocr(
    engine: OcrEngine,
    overlaid_image: Image.Image,
    text_box_px: Sequence[int],
    original_text: str,
    *,
    font_size_px: float | None = None,
) -> OcrMetrics:
    """Read the text inside the tight text box (plus a margin) and score it against the copy.

    Engine errors propagate (OcrUnavailableError / OcrError): a failure is not a zero score.
    ``font_size_px`` (the overlay's size) helps the engine scale small text.
    """
    if not original_text or not original_text.strip():
        raise ValueError("the original text is empty: nothing to compare the OCR result with")
    box = crop_box(overlaid_image.size, text_box_px)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"text box {tuple(text_box_px)} is empty or outside the image")
    crop = overlaid_image.convert("RGB").crop(box)
    reading = engine.read(crop, text_height_px=font_size_px)
    recognized = " ".join(reading.text.split())
    readable, pictographs = split_pictographs(original_text)
    if not readable.strip():
        # Copy of emoji only is valid and drawn; OCR has nothing to compare, and says so (the
        # quality check reports "not evaluated") rather than failing the stage or scoring zero.
        return OcrMetrics(
            engine=engine.name, original_text="", recognized_text=recognized, not_compared=pictographs,
            ocr_confidence=reading.confidence, character_match_rate=None, word_match_rate=None,
            ocr_accuracy=None, edit_distance=None, similarity=None, crop_box_px=box, scale_hint_px=font_size_px,
        )
    m = text_metrics(readable, recognized)
    return OcrMetrics(
        engine=engine.name, original_text=readable, recognized_text=recognized, not_compared=pictographs,
        ocr_confidence=reading.confidence,
        character_match_rate=float(m["character_match_rate"]),
        word_match_rate=float(m["word_match_rate"]), ocr_accuracy=float(m["ocr_accuracy"]),
        edit_distance=int(m["edit_distance"]), similarity=float(m["similarity"]),
        crop_box_px=box, scale_hint_px=font_size_px,
    )
