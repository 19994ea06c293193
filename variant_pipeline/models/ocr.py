"""The OCR engine: Tesseract through its command line (Debian ships its Korean and English data,
so it works offline on a fresh machine). Small text is upscaled and binarized before reading."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from variant_pipeline.work.ocr import OcrError, OcrReading, OcrUnavailableError, OcrWord

if TYPE_CHECKING:
    from variant_pipeline.config import Settings

INSTALL_HINT = (
    "install Tesseract with its Korean and English data "
    "(Debian/Ubuntu: apt-get install tesseract-ocr tesseract-ocr-kor tesseract-ocr-eng) "
    "or set VP_TESSERACT_CMD to the tesseract binary"
)

class TesseractOcr:
    """Tesseract 4/5 through its command line (TSV output gives per-word confidences).

    ``psm`` 6 reads "a single uniform block of text", which is what the overlay draws.
    """

    name = "tesseract"

    def __init__(
        self,
        cmd: str = "tesseract",
        languages: str = "kor+eng",
        psm: int = 6,
        tessdata_dir: str | None = None,
        target_text_height_px: int = 48,
        timeout_s: float = 60.0,
        retry_below_confidence: float = 0.85,
        denoise: int = 3,
    ) -> None:
        self.cmd = cmd
        self.languages = languages
        self.psm = psm
        self.tessdata_dir = tessdata_dir
        self.target_text_height_px = target_text_height_px
        self.timeout_s = timeout_s
        self.retry_below_confidence = retry_below_confidence
        self.denoise = denoise  # median filter size for the retry; 0 disables
        self._checked: str | None = None

    def _base_args(self) -> list[str]:
        exe = self._resolve_exe()
        return [exe] + (["--tessdata-dir", self.tessdata_dir] if self.tessdata_dir else [])

    def _resolve_exe(self) -> str:
        exe = shutil.which(self.cmd) or (self.cmd if Path(self.cmd).is_file() else None)
        if exe is None:
            raise OcrUnavailableError(f"tesseract binary {self.cmd!r} not found; {INSTALL_HINT}")
        return exe

    def check(self) -> str:
        """Verify the binary runs and has every language; returns its version line."""
        if self._checked is not None:
            return self._checked
        args = self._base_args()
        try:
            version = subprocess.run(args[:1] + ["--version"], capture_output=True, text=True,
                                     timeout=self.timeout_s, check=False)
            langs = subprocess.run(args + ["--list-langs"], capture_output=True, text=True,
                                   timeout=self.timeout_s, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise OcrUnavailableError(f"cannot run tesseract {self.cmd!r}: {exc}; {INSTALL_HINT}") from exc
        if version.returncode != 0:
            raise OcrUnavailableError(
                f"{self.cmd!r} --version failed ({version.returncode}): {version.stderr.strip()}; {INSTALL_HINT}"
            )
        have = {line.strip() for line in langs.stdout.splitlines()[1:] if line.strip()}
        missing = [lang for lang in self.languages.split("+") if lang not in have]
        if missing:
            pkgs = " ".join(f"tesseract-ocr-{m}" for m in missing)
            raise OcrUnavailableError(
                f"tesseract has no language data for {', '.join(missing)} (installed: "
                f"{', '.join(sorted(have)) or 'none'}); install it (Debian/Ubuntu: apt-get install "
                f"{pkgs}) or set TESSDATA_PREFIX / tessdata_dir to a directory holding "
                f"{', '.join(m + '.traineddata' for m in missing)}"
            )
        self._checked = (version.stdout or version.stderr).splitlines()[0].strip()
        return self._checked

    def preprocess(self, image: Image.Image, text_height_px: float | None,
                   binarize: bool = True, denoise: int = 0) -> Image.Image:
        """Dark text on a light ground, scaled so glyphs are about ``target_text_height_px``,
        optionally Otsu-binarized, with a border of the ground colour.

        Tesseract reads a grey ground badly when the crop is framed by another tone (it then
        takes the ground for one big glyph), hence the binarization and matching border.
        """
        grey = image.convert("L")
        if text_height_px and text_height_px > 0:
            scale = self.target_text_height_px / text_height_px
        else:
            scale = self.target_text_height_px / max(1.0, min(grey.size) * 0.6)
        scale = float(min(max(scale, 0.5), 8.0))
        if abs(scale - 1.0) > 0.05:
            grey = grey.resize((round(grey.width * scale), round(grey.height * scale)),
                               Image.Resampling.LANCZOS)
        if denoise:
            # Grain on the ground turns into specks after thresholding, which Tesseract reads
            # as punctuation; at the target size strokes are several pixels wide and survive.
            grey = grey.filter(ImageFilter.MedianFilter(denoise))
        arr = np.asarray(grey, dtype=np.float64)
        thr = _otsu(arr)
        # Polarity: the text is the minority side of the Otsu split; make it dark.
        if float((arr <= thr).mean()) > 0.5:
            grey = ImageOps.invert(grey)
            arr = 255.0 - arr
            thr = 255.0 - thr
        if binarize:
            grey = Image.fromarray(np.where(arr > thr, 255, 0).astype(np.uint8), "L")
            ground = 255
        else:
            ground = int(np.median(arr[arr > thr])) if (arr > thr).any() else 255
        pad = max(10, round(self.target_text_height_px * 0.5))
        return ImageOps.expand(grey, border=pad, fill=ground)

    def _run(self, prepared: Image.Image) -> OcrReading:
        buf = io.BytesIO()
        prepared.save(buf, format="PNG")
        args = self._base_args() + ["stdin", "stdout", "-l", self.languages, "--psm", str(self.psm),
                                    "-c", "preserve_interword_spaces=1", "tsv"]
        try:
            proc = subprocess.run(args, input=buf.getvalue(), capture_output=True,
                                  timeout=self.timeout_s, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise OcrError(f"tesseract failed to run: {exc}") from exc
        if proc.returncode != 0:
            raise OcrError(f"tesseract exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()}")
        return _parse_tsv(proc.stdout.decode("utf-8", errors="replace"))

    def read(self, image: Image.Image, *, text_height_px: float | None = None) -> OcrReading:
        """Binarized first; if Tesseract is unsure of that (a busy or grainy ground), also try it
        denoised and the plain grey image, and keep the most confident reading. The choice uses
        the engine's own confidence, never the expected text."""
        self.check()
        first = self._run(self.preprocess(image, text_height_px, binarize=True, denoise=0))
        if first.text and first.confidence >= self.retry_below_confidence:
            return first
        readings = [first]
        if self.denoise:
            readings.append(self._run(self.preprocess(image, text_height_px, binarize=True,
                                                      denoise=self.denoise)))
        readings.append(self._run(self.preprocess(image, text_height_px, binarize=False, denoise=0)))
        return max(readings, key=lambda r: (bool(r.text), r.confidence))


def _otsu(arr: np.ndarray) -> float:
    hist, edges = np.histogram(arr, bins=256, range=(0, 256))
    p = hist.astype(np.float64) / max(1, hist.sum())
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    mu_t = mu[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_b = (mu_t * omega - mu) ** 2 / (omega * (1 - omega))
    sigma_b = np.nan_to_num(sigma_b)
    return float(edges[int(np.argmax(sigma_b))])


def _is_hangul(ch: str) -> bool:
    return "\uac00" <= ch <= "\ud7a3" or "\u1100" <= ch <= "\u11ff" or "\u3130" <= ch <= "\u318f"


def _parse_tsv(tsv: str, merge_gap: float = 0.27) -> OcrReading:
    """Words and lines from Tesseract's TSV.

    Tesseract's Korean model splits Hangul words into syllables ("겉 바 속 촉"); two Hangul
    pieces on one line whose gap is under ``merge_gap`` x the line's median word height are
    joined again: measured on NanumGothic/Myeongjo renders, gaps inside a word are 0.0-0.25 of
    that height and real spaces 0.3-0.7.
    """
    words: list[OcrWord] = []
    line_ids: dict[tuple[str, str, str, str], int] = {}
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        if row.get("level") != "5":
            continue
        text = (row.get("text") or "").strip()
        conf = float(row.get("conf") or -1)
        if not text or conf < 0:
            continue
        key = (row["page_num"], row["block_num"], row["par_num"], row["line_num"])
        line = line_ids.setdefault(key, len(line_ids))
        left, top = int(row["left"]), int(row["top"])
        box = (left, top, left + int(row["width"]), top + int(row["height"]))
        words.append(OcrWord(text=text, confidence=conf / 100.0, box_px=box, line=line))
    heights: dict[int, list[int]] = {}
    for wd in words:
        heights.setdefault(wd.line, []).append(wd.box_px[3] - wd.box_px[1])
    merged: list[OcrWord] = []
    for wd in words:
        prev = merged[-1] if merged else None
        if (prev is not None and prev.line == wd.line and _is_hangul(prev.text[-1])
                and _is_hangul(wd.text[0])):
            height = float(np.median(heights[wd.line]))
            if wd.box_px[0] - prev.box_px[2] < merge_gap * height:
                n_prev, n_cur = len(prev.text), len(wd.text)
                merged[-1] = OcrWord(
                    text=prev.text + wd.text,
                    confidence=(prev.confidence * n_prev + wd.confidence * n_cur) / (n_prev + n_cur),
                    box_px=(min(prev.box_px[0], wd.box_px[0]), min(prev.box_px[1], wd.box_px[1]),
                            max(prev.box_px[2], wd.box_px[2]), max(prev.box_px[3], wd.box_px[3])),
                    line=wd.line,
                )
                continue
        merged.append(wd)
    lines: dict[int, list[str]] = {}
    for wd in merged:
        lines.setdefault(wd.line, []).append(wd.text)
    text = "\n".join(" ".join(ws) for _, ws in sorted(lines.items()))
    conf = float(np.mean([wd.confidence for wd in words])) if words else 0.0
    return OcrReading(text=text, confidence=conf, words=tuple(merged))


def load_ocr(settings: Settings) -> TesseractOcr:
    """The registry's loader: the configured Tesseract binary (checked on first read)."""
    return TesseractOcr(cmd=settings.tesseract_cmd)
