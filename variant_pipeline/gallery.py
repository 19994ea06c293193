"""One job's results as a gallery: every variant's final image side by side with its scores and
check outcomes, the Korean ad copy, the Instagram copy and the hashtags; a failed variant with its
reason. Two renderings of the same ``JobResults``: markdown for the job asset's materialization in
the Dagster UI (small inline thumbnails: metadata lives in Dagster's event log) and a
self-contained HTML file for people (images embedded as data URIs).
"""

from __future__ import annotations

import base64
import html
import io

from PIL import Image

from variant_pipeline.data.results import JobResults, VariantResult, retention_line
from variant_pipeline.data.storage import AssetStore, StorageError
from variant_pipeline.quality import CHECKS, CheckOutcome

MARK = {"passed": "✅", "failed": "⚠️", "not_evaluated": "❔", "pending": "…"}


def data_uri(image: Image.Image, max_px: int, quality: int = 80) -> str:
    """A JPEG data URI of ``image`` scaled to fit ``max_px``."""
    small = image.convert("RGB")
    small.thumbnail((max_px, max_px))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _load(store: AssetStore, uri: str) -> Image.Image | str:
    """The image at ``uri`` (one of ``store``'s), or why it cannot be shown."""
    key = store.relative_of(uri)
    if key is None:
        return f"image not in the asset store {store.uri}: {uri}"
    try:
        return store.open_image(key)
    except StorageError as exc:
        return f"image unreadable: {exc}"
    except (OSError, ValueError) as exc:
        return f"image unreadable ({type(exc).__name__}): {uri}"


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _state_line(v: VariantResult) -> str:
    if v.state == "failed":
        return f"failed at {v.stage}: {v.error or 'no reason recorded'}"
    if v.state == "done":
        return "done"
    return f"{v.state}: {v.stage}/{v.status}"


def _score_rows(v: VariantResult) -> list[tuple[str, str]]:
    s = v.scores
    return [
        ("OCR accuracy", _fmt(s.get("ocr_accuracy"))),
        ("contrast mean / p10", f"{_fmt(s.get('contrast_ratio'))} / {_fmt(s.get('contrast_ratio_p10'))}"),
        ("text IoU with forbidden objects", _fmt(s.get("max_iou_text"))),
        ("judge: on brief", _fmt(s.get("on_brief"))),
    ]


def _check_cell(check: CheckOutcome) -> str:
    return f"{MARK[check.outcome]} {check.line()}"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def markdown_gallery(results: JobResults, store: AssetStore, max_px: int = 192) -> str:
    """The gallery as one markdown table (a column per variant) followed by the job's copy."""
    variants = results.variants
    header = "| | " + " | ".join(f"variant {v.creation_order}" for v in variants) + " |"
    rows = [header, "|---" * (len(variants) + 1) + "|"]

    def images() -> list[str]:
        cells = []
        for v in variants:
            shown = _load(store, v.image_path) if v.image_path else "no final image"
            cells.append(f"![variant {v.creation_order}]({data_uri(shown, max_px)})"
                         if isinstance(shown, Image.Image) else _cell(shown))
        return cells

    rows.append("| image | " + " | ".join(images()) + " |")
    rows.append("| state | " + " | ".join(_cell(_state_line(v)) for v in variants) + " |")
    scores = [_score_rows(v) for v in variants]
    for i, (label, _value) in enumerate(scores[0] if scores else []):
        rows.append(f"| {label} | " + " | ".join(_cell(rows_of_v[i][1]) for rows_of_v in scores) + " |")
    for i, check in enumerate(CHECKS):
        rows.append(f"| check {check.name} | "
                    + " | ".join(_cell(_check_cell(v.checks[i])) for v in variants) + " |")
    copy = [
        f"**Job** `{results.job_id}`: {results.state} ({results.stage}/{results.status})"
        + (f", error: {results.error}" if results.error else ""),
        f"**Korean ad copy**: {_fmt(results.ad_copy_kor)}",
        f"**Instagram copy**: {_fmt(results.instagram_copy)}",
        f"**Hashtags**: {' '.join(results.hashtags) or '–'}",
    ]
    return "\n".join(rows) + "\n\n" + "\n\n".join(" ".join(line.split()) for line in copy) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}
.variants{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}
.card{border:1px solid #ccc;border-radius:8px;padding:12px;width:340px}
.card img{width:100%;border-radius:4px}.failed{border-color:#c33;background:#fff5f5}
table{border-collapse:collapse;width:100%;font-size:14px}td{padding:2px 4px;vertical-align:top}
.check{font-size:14px;margin:6px 0}.passed{color:#176617}.not_evaluated,.pending{color:#666}.failed-check{color:#a15c00}
.copy{margin-top:24px;max-width:1060px;white-space:pre-wrap}"""


def html_gallery(results: JobResults, store: AssetStore, max_px: int = 640) -> str:
    """A self-contained HTML page (images embedded) of the job's results."""
    e = html.escape
    pruned = retention_line(results.partitions_removed_at, results.files_removed_at)
    cards = []
    for v in results.variants:
        shown = _load(store, v.image_path) if v.image_path else "no final image yet"
        image = (f'<img alt="variant {v.creation_order}" src="{data_uri(shown, max_px, 88)}">'
                 if isinstance(shown, Image.Image) else f"<p>{e(shown)}</p>")
        scores = "".join(f"<tr><td>{e(k)}</td><td>{e(val)}</td></tr>" for k, val in _score_rows(v))
        checks = "".join(
            f'<p class="check"><span class="{"failed-check" if c.outcome == "failed" else c.outcome}">'
            f"{MARK[c.outcome]} <b>{e(c.name)}</b></span><br>{e(c.line())}</p>" for c in v.checks)
        cards.append(
            f'<div class="card{" failed" if v.state == "failed" else ""}"><h3>variant {v.creation_order}</h3>'
            f"{image}<p><b>{e(_state_line(v))}</b></p>"
            f"<p>copy on the image: {e(_fmt(v.overlay_text))}</p>"
            f"<table>{scores}</table><h4>checks</h4>{checks}"
            f'<p><small>{e(v.job_variants_id)}<br>{e(v.image_path or "")}</small></p></div>')
    return (
        f'<!doctype html><html lang="ko"><head><meta charset="utf-8"><title>job {e(results.job_id)}</title>'
        f"<style>{_CSS}</style></head><body><h1>Job {e(results.job_id)}</h1>"
        f"<p>tenant {e(results.tenant_id)} · {e(results.state)} ({e(results.stage)}/{e(results.status)})"
        f"{' · error: ' + e(results.error) if results.error else ''}</p>"
        f"{'<p>' + e(pruned) + '</p>' if pruned else ''}"
        f'<div class="variants">{"".join(cards)}</div><div class="copy">'
        f"<h2>Korean ad copy</h2><p>{e(_fmt(results.ad_copy_kor))}</p>"
        f"<h2>Instagram copy</h2><p>{e(_fmt(results.instagram_copy))}</p>"
        f"<h2>Hashtags</h2><p>{e(' '.join(results.hashtags) or '–')}</p></div></body></html>\n"
    )
