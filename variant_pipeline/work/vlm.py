"""vlm_analyze and vlm_judge: prompts, batched generation and parsers that survive garbage.

vlm_analyze asks three questions per variant, in this order:
1. the image alone, greedy (given the ad copy, the original's LLaVA saw a kimchi stew as the ice
   cream the copy named);
2. whether the ad copy fits that description (greedy), or, without copy, whether the photo is usable;
3. a font for the short Korean overlay text, which the prompt shows the model (the original showed it
   the English copy, so it could name a font without Hangul), sampled with
   a per-variant seed so it is diverse across variants yet reproducible.

vlm_judge shows the model the finished ad *and the brief* and asks for a JSON verdict.

Parsers never raise on model output. A field they cannot read is ``None`` and its name is listed in
``unparsed``; nothing silently becomes a default score or a default font.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from PIL import Image, ImageColor

from variant_pipeline.work.model_json import TYPOGRAPHIC_QUOTES, lookup, parse_json_object
from variant_pipeline.work.types import Brief, FontRecommendation


class VlmGenerate(Protocol):
    """What the stages need from a vision-language backend (``models.vlm.VlmBackend``)."""

    def generate(self, images: Sequence[Image.Image], prompts: Sequence[str], *, do_sample: bool = False,
                 temperature: float = 0.7, max_new_tokens: int = 256, min_new_tokens: int = 0,
                 seed: int | Sequence[int] | None = None) -> list[str]: ...


@dataclass(frozen=True)
class VlmOptions:
    max_new_tokens: int = 256
    # Tiny random models may emit EOS at once; a floor keeps the plumbing exercised. Harmless for real
    # models at this size.
    min_new_tokens: int = 8
    font_temperature: float = 0.7
    judge_do_sample: bool = False  # the original sampled at 0.7; greedy is reproducible
    judge_temperature: float = 0.7


# --------------------------------------------------------------------------------------------------
# Fonts that contain Hangul. Styles the overlay can honour for Korean text: no italics (Hangul fonts
# do not ship them, and the original's italic mapped to a font without Hangul).
HANGUL_FONTS: dict[str, str] = {
    "Noto Sans KR": "sans-serif", "Noto Sans CJK KR": "sans-serif", "Noto Serif KR": "serif",
    "Noto Serif CJK KR": "serif", "Nanum Gothic": "sans-serif", "Nanum Barun Gothic": "sans-serif",
    "Nanum Square": "sans-serif", "Nanum Myeongjo": "serif", "Nanum Pen Script": "sans-serif",
    "Malgun Gothic": "sans-serif", "Apple SD Gothic Neo": "sans-serif", "Pretendard": "sans-serif",
    "Spoqa Han Sans": "sans-serif", "Gmarket Sans": "bold", "Black Han Sans": "bold", "Do Hyeon": "bold",
    "Jua": "bold", "Gowun Dodum": "sans-serif", "Gowun Batang": "serif", "IBM Plex Sans KR": "sans-serif",
    "UnDotum": "sans-serif", "UnBatang": "serif", "Baekmuk Gulim": "sans-serif", "Baekmuk Batang": "serif",
}

_STYLE_SYNONYMS = {
    "sans-serif": "sans-serif", "sans serif": "sans-serif", "sansserif": "sans-serif", "sans": "sans-serif",
    "gothic": "sans-serif", "dotum": "sans-serif", "serif": "serif", "myeongjo": "serif", "batang": "serif",
    "bold": "bold", "heavy": "bold", "black": "bold",
}
_SIZE_SYNONYMS = {"small": "small", "medium": "medium", "large": "large", "big": "large", "huge": "large",
                  "tiny": "small", "normal": "medium", "regular": "medium"}


# --------------------------------------------------------------------------------------------------
# Prompts (this project's own wording).

def analysis_prompt() -> str:
    return (
        "You are reviewing a photo that will be used in an advertisement. Describe only what is visible "
        "in the picture; do not guess any slogan, caption or product name that is not shown.\n"
        "Answer with exactly these four lines:\n"
        "Product: <the main item shown>\n"
        "Characteristics: <colour, texture, temperature, portion>\n"
        "Setting: <background and surface>\n"
        "Mood: <the feeling the photo gives>"
    )


def validation_prompt(analysis: str, ad_copy: str | None) -> str:
    if not ad_copy:
        return (
            "Here is a description of this photo, written without any ad copy in view:\n"
            f"{analysis.strip()}\n\n"
            "No ad copy has been written yet. Judge the photo alone as material for a food advertisement.\n"
            "Answer with exactly these lines:\n"
            "Verdict: <suitable or not suitable>\n"
            "Issues: <problems such as blur, clutter or poor lighting, separated by ';', or none>\n"
            "Reasoning: <one or two sentences>"
        )
    return (
        "An advertisement will pair this photo with the ad copy below. First, a description of the photo "
        "that was written without the copy in view:\n"
        f"{analysis.strip()}\n\n"
        f'Ad copy: "{ad_copy.strip()}"\n\n'
        "Check whether the copy fits the photo:\n"
        "- Is the copy about the same product as the photo?\n"
        "- Do its claims (taste, temperature, ingredients, setting) agree with what is visible?\n"
        "- Does it contradict itself or the audience it names? Copy for people who avoid spicy food "
        "cannot promote a spicy dish.\n"
        "Name a target audience only if the copy states one.\n\n"
        "Answer with exactly these lines:\n"
        "Score: <0-10>/10\n"
        "Consistent: <yes or no>\n"
        "Mismatch: <yes or no>\n"
        "Mismatch details: <what does not fit, or none>\n"
        "Verdict: <suitable or not suitable>\n"
        "Reasoning: <one or two sentences>\n"
        "Give 0-2 when the copy contradicts the photo or itself, and 7-10 when everything fits."
    )


def font_prompt(analysis: str, overlay_text: str | None, ad_copy: str | None) -> str:
    headline = overlay_text or ad_copy or ""
    meaning = f' (in English: "{ad_copy.strip()}")' if overlay_text and ad_copy else ""
    names = ", ".join(HANGUL_FONTS)
    return (
        f'The Korean headline "{headline.strip()}"{meaning} will be drawn on this photo.\n'
        f"The photo: {_first_lines(analysis, 4)}\n\n"
        "Recommend how to set the headline. The font must contain Korean Hangul letters: choose one of "
        f"{names}. Korean fonts have no italics, so the style is sans-serif, serif or bold. "
        "Use light text where the background is dark and dark text where it is light.\n"
        "Reply with JSON only:\n"
        '{"font_style": "sans-serif | serif | bold", "font_name": "<one of the fonts above>", '
        '"font_size_category": "small | medium | large", "text_color_hex": "<RRGGBB>", '
        '"reasoning": "<one sentence>"}'
    )


def judge_prompt(brief: Brief, headline: str) -> str:
    """The judge sees what the ad was supposed to say (the original's judge never did): the
    ``headline`` drawn on the image, and the brief's English description and ad copy."""
    lines = [f'- Headline that should appear on the image: "{headline.strip()}"']
    if brief.desc_eng.strip():
        lines.append(f"- Product: {brief.desc_eng.strip()}")
    if brief.ad_copy_eng.strip():
        lines.append(f'- Ad copy (English): "{brief.ad_copy_eng.strip()}"')
    lines.append("- Goal: make people want to order this product")
    return (
        "This is a finished advertisement: a photo with a Korean headline drawn on it.\n"
        "The brief was:\n" + "\n".join(lines) + "\n\n"
        "Judge the advertisement against this brief:\n"
        "- on_brief: do the photo and the headline together deliver the brief?\n"
        "- occlusion: does the headline cover the product? (true means it covers it)\n"
        "- contrast_ok: is the headline easy to read against what is behind it?\n"
        "- cta_present: is there a call to action, such as order now or limited time?\n"
        "Reply with JSON only:\n"
        '{"on_brief": true or false, "occlusion": true or false, "contrast_ok": true or false, '
        '"cta_present": true or false, "issues": ["<problem>", ...], "reasoning": "<one or two sentences>"}'
    )


def _first_lines(text: str, n: int) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " ".join(lines[:n]) if lines else "(no description)"


# --------------------------------------------------------------------------------------------------
# Parsing helpers.

def clean_answer(text: str | None) -> str:
    """Undo LLaVA's escaped underscores (``on\\_brief``, which broke the original's JSON reading)
    and typographic quotes."""
    if not text:
        return ""
    return text.replace("\\_", "_").translate(TYPOGRAPHIC_QUOTES).strip()


def labelled(text: str, *labels: str) -> str | None:
    """The value of the first ``Label: value`` line (markdown bullets/bold tolerated)."""
    alt = "|".join(re.escape(lb).replace(r"\ ", r"[\s_-]*") for lb in labels)
    m = re.search(rf"^[\s>*#\-\d.)]*\**\s*(?:{alt})\s*\**\s*(?:[:：=]|[-–—](?=\s))\s*\**\s*(.*?)\s*\**\s*$", text, re.I | re.M)
    if not m:
        return None
    value = m.group(1).strip().strip('"').strip()
    return value or None


def parse_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().strip('."*').lower()
        if re.match(r"^(yes|true|y)\b", v):
            return True
        if re.match(r"^(no|false|n)\b(?!/)", v):
            return False
    return None


_SCORE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:[-–~]\s*(\d+(?:\.\d+)?))?\s*(?:/|out\s+of)\s*10\b", re.I)


def parse_score(text: str) -> float | None:
    """A 0..10 score (``7/10``, ``7-8/10``, ``7 out of 10``, or a bare number on a Score line) → 0..1."""
    line = labelled(text, "match score", "score", "rating", "relevance")
    for candidate in ([line] if line else []) + [text]:
        m = _SCORE.search(candidate)
        if m:
            lo = float(m.group(1))
            hi = float(m.group(2)) if m.group(2) else lo
            value = (lo + hi) / 2
            if 0 <= value <= 10:
                return round(value / 10, 3)
    if line:
        m = re.match(r"^(\d+(?:\.\d+)?)\b", line)
        if m and 0 <= float(m.group(1)) <= 10:
            return round(float(m.group(1)) / 10, 3)
    return None


def _is_none_text(value: str | None) -> bool:
    return value is None or re.fullmatch(r"(none|n/?a|no|nothing|-+|no mismatch\.?)\.?", value.strip(), re.I) is not None


# Deterministic contradictions the model is known to miss (LLaVA-1.5-7B caught "for people who hate
# spicy food" beside an extra-spicy stew in 1 of 3 configurations): copy addressed to people who
# avoid spicy food while the product (in the copy or the photo) is spicy.
_AVOID = r"(?:hates?|dislikes?|don'?t\s+like|do\s+not\s+like|avoids?|can'?t\s+(?:handle|eat|stand)|cannot\s+(?:handle|eat))"
_SPICY = r"(?:spicy|spice|chil+i|hot\s+pepper|fiery|매운|매콤|얼큰)"
_AVOID_SPICY = re.compile(rf"{_AVOID}\s+(?:\w+\s+){{0,2}}?{_SPICY}\w*|not\s+for\s+(?:\w+\s+){{0,4}}?{_SPICY}\w*", re.I)


def rule_contradictions(ad_copy: str | None, image_description: str) -> list[str]:
    if not ad_copy:
        return []
    found = []
    m = _AVOID_SPICY.search(ad_copy)
    if m:
        rest = ad_copy[:m.start()] + " " + ad_copy[m.end():]
        if re.search(_SPICY, rest, re.I) or re.search(_SPICY, image_description, re.I):
            found.append("the copy addresses people who avoid spicy food but the product is spicy")
    return found


# --------------------------------------------------------------------------------------------------
# vlm_analyze

@dataclass(frozen=True)
class ImageDescription:
    product: str | None = None
    characteristics: str | None = None
    setting: str | None = None
    mood: str | None = None


@dataclass(frozen=True)
class AnalyzeInput:
    image: Image.Image
    ad_copy: str | None = None  # English ad copy to validate (None: image-only review)
    overlay_text: str | None = None  # the short Korean copy that will be drawn (for the font)
    seed: int = 0  # font sampling seed, e.g. the variant's image seed


@dataclass(frozen=True)
class VlmAnalysis:
    relevance: float | None  # 0..1; None when there is no copy or no readable score
    valid: bool | None
    consistent: bool | None
    mismatch: bool | None
    mismatch_details: str | None
    issues: tuple[str, ...]
    reasoning: str | None
    description: ImageDescription
    font: FontRecommendation
    ad_copy: str | None
    raw: dict[str, str] = field(default_factory=dict)  # analysis / validation / font answers
    prompts: dict[str, str] = field(default_factory=dict)
    unparsed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["font"]["unparsed"] = list(self.font.unparsed)
        d["issues"], d["unparsed"] = list(self.issues), list(self.unparsed)
        return d


def parse_description(answer: str) -> tuple[ImageDescription, list[str]]:
    text = clean_answer(answer)
    values = {
        "product": labelled(text, "product", "product shown"),
        "characteristics": labelled(text, "characteristics"),
        "setting": labelled(text, "setting", "background"),
        "mood": labelled(text, "mood"),
    }
    return ImageDescription(**values), [f"description.{k}" for k, v in values.items() if v is None]


def parse_validation(answer: str, ad_copy: str | None, description_text: str) -> dict[str, Any]:
    """Fields of ``VlmAnalysis`` from the validation answer (plus rule checks); never raises."""
    text = clean_answer(answer)
    unparsed: list[str] = []
    issues: list[str] = []
    verdict_raw = labelled(text, "verdict", "overall assessment")
    verdict: bool | None = None
    if verdict_raw:
        v = verdict_raw.lower()
        verdict = False if re.search(r"\bnot\s+suitable|unsuitable", v) else (True if "suitable" in v else None)
    if verdict is None:
        unparsed.append("verdict")
    reasoning = labelled(text, "reasoning", "reason")
    if reasoning is None:
        unparsed.append("reasoning")

    if not ad_copy:  # image-only review
        issues_raw = labelled(text, "issues", "problems")
        if issues_raw is None:
            unparsed.append("issues")
        elif not _is_none_text(issues_raw):
            issues += [s.strip() for s in re.split(r"[;•]", issues_raw) if s.strip()]
        return dict(relevance=None, valid=verdict, consistent=None, mismatch=None, mismatch_details=None,
                    issues=issues, reasoning=reasoning, unparsed=unparsed)

    score = parse_score(text)
    if score is None:
        unparsed.append("relevance")
    consistent = parse_bool(labelled(text, "consistent", "logical consistency", "consistency"))
    if consistent is None:
        unparsed.append("consistent")
    mismatch = parse_bool(labelled(text, "mismatch", "mismatch detected"))
    details = labelled(text, "mismatch details", "details")
    if mismatch is None and details is not None:
        mismatch = not _is_none_text(details)
    if mismatch is None:
        unparsed.append("mismatch")
    details = None if _is_none_text(details) else details

    for rule in rule_contradictions(ad_copy, description_text):
        issues.append(f"rule: {rule}")
        consistent, mismatch = False, True
        details = details or rule
    if consistent is True and mismatch is True:
        issues.append("the answer contradicts itself: consistent, yet a mismatch is reported")
    if verdict is True and (mismatch or consistent is False):
        issues.append("the answer calls the pair suitable despite a mismatch")
    if mismatch and details:
        issues.insert(0, details)

    # Clamp like the original: a contradiction or mismatch cannot score high.
    if score is not None:
        if consistent is False:
            score = min(score, 0.1)
        elif mismatch:
            score = min(score, 0.2)
    if mismatch or consistent is False:
        valid: bool | None = False
    elif verdict is not None:
        valid = verdict
    elif score is not None and mismatch is False:
        valid = score >= 0.7
    else:
        valid = None
    return dict(relevance=score, valid=valid, consistent=consistent, mismatch=mismatch,
                mismatch_details=details, issues=issues, reasoning=reasoning, unparsed=unparsed)


def _match_font_name(value: str) -> str | None:
    squash = re.sub(r"[^a-z0-9]", "", value.lower())
    if not squash:
        return None
    # Longest names first, so "Noto Sans CJK KR" wins over "Noto Sans KR" style prefixes.
    for name in sorted(HANGUL_FONTS, key=len, reverse=True):
        key = re.sub(r"[^a-z0-9]", "", name.lower())
        if key == squash or key in squash:
            return name
    return None


def _parse_color(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    m = re.search(r"#?\b([0-9a-fA-F]{6})\b", value)
    if m:
        return m.group(1).upper()
    m = re.search(r"#([0-9a-fA-F]{3})\b", value)
    if m:
        return "".join(c * 2 for c in m.group(1)).upper()
    word = value.strip().strip('."').lower()
    if re.fullmatch(r"[a-z]+", word or "-"):
        try:
            r, g, b = ImageColor.getrgb(word)[:3]
            return f"{r:02X}{g:02X}{b:02X}"
        except ValueError:
            return None
    return None


def parse_font(answer: str) -> FontRecommendation:
    """A ``FontRecommendation`` whose name is a Hangul font and style one the overlay can use for Korean."""
    text = clean_answer(answer)
    obj = parse_json_object(text).value or {}

    def pick(*keys: str) -> Any:
        found = lookup(obj, *keys)
        if found is not None:
            return found
        return labelled(text, *[k.replace("_", " ") for k in keys])

    unparsed: list[str] = []
    style_raw = pick("font_style", "style")
    style = _STYLE_SYNONYMS.get(str(style_raw).strip().lower()) if isinstance(style_raw, str) else None
    if style is None:
        unparsed.append("style:italic-has-no-hangul" if isinstance(style_raw, str) and "italic" in style_raw.lower()
                        else "style")
    name_raw = pick("font_name", "name", "font")
    name = _match_font_name(name_raw) if isinstance(name_raw, str) else None
    if name is None:
        # A non-Hangul font name (e.g. Arial) is as unusable as none at all.
        unparsed.append("name" if not isinstance(name_raw, str) else "name:not-a-hangul-font")
    size_raw = pick("font_size_category", "size_category", "font_size", "size")
    size = _SIZE_SYNONYMS.get(str(size_raw).strip().strip('."').lower()) if isinstance(size_raw, str) else None
    if size is None:
        unparsed.append("size_category")
    color = _parse_color(pick("text_color_hex", "font_color_hex", "text_color", "font_color", "color_hex", "color", "colour"))
    if color is None:
        unparsed.append("color_hex")
    reasoning = pick("reasoning", "reason")
    reasoning = reasoning.strip() if isinstance(reasoning, str) and reasoning.strip() else None
    if reasoning is None:
        unparsed.append("reasoning")
    return FontRecommendation(style=style, name=name, size_category=size, color_hex=color,
                              reasoning=reasoning, unparsed=tuple(unparsed))


def analyze_batch(vlm: VlmGenerate, inputs: Sequence[AnalyzeInput],
                  options: VlmOptions = VlmOptions()) -> list[VlmAnalysis]:
    """vlm_analyze for several variants: three batched model calls in all."""
    if not inputs:
        return []
    images = [i.image for i in inputs]
    common = dict(max_new_tokens=options.max_new_tokens, min_new_tokens=options.min_new_tokens)
    p_analysis = analysis_prompt()
    analyses = vlm.generate(images, [p_analysis] * len(inputs), do_sample=False, **common)
    p_valid = [validation_prompt(a, i.ad_copy) for a, i in zip(analyses, inputs, strict=True)]
    validations = vlm.generate(images, p_valid, do_sample=False, **common)
    p_font = [font_prompt(a, i.overlay_text, i.ad_copy) for a, i in zip(analyses, inputs, strict=True)]
    fonts = vlm.generate(images, p_font, do_sample=True, temperature=options.font_temperature,
                         seed=[i.seed for i in inputs], **common)
    out = []
    for inp, a, v, f, pv, pf in zip(inputs, analyses, validations, fonts, p_valid, p_font, strict=True):
        description, d_unparsed = parse_description(a)
        fields = parse_validation(v, inp.ad_copy, clean_answer(a))
        font = parse_font(f)
        unparsed = d_unparsed + fields.pop("unparsed") + [f"font.{u}" for u in font.unparsed]
        out.append(VlmAnalysis(
            **{**fields, "issues": tuple(fields["issues"])}, description=description, font=font,
            ad_copy=inp.ad_copy, raw={"analysis": a, "validation": v, "font": f},
            prompts={"analysis": p_analysis, "validation": pv, "font": pf}, unparsed=tuple(unparsed),
        ))
    return out


def analyze(vlm: VlmGenerate, inp: AnalyzeInput, options: VlmOptions = VlmOptions()) -> VlmAnalysis:
    return analyze_batch(vlm, [inp], options)[0]


# --------------------------------------------------------------------------------------------------
# vlm_judge

@dataclass(frozen=True)
class JudgeInput:
    image: Image.Image  # the overlaid ad
    brief: Brief
    headline: str  # the text drawn on it
    seed: int = 0  # used only when judge sampling is on


@dataclass(frozen=True)
class JudgeVerdict:
    on_brief: bool | None
    occlusion: bool | None  # True: the text covers the product
    contrast_ok: bool | None
    cta_present: bool | None
    issues: tuple[str, ...]
    reasoning: str | None
    raw: str
    unparsed: tuple[str, ...] = ()
    prompt: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["issues"], d["unparsed"] = list(self.issues), list(self.unparsed)
        return d


_JUDGE_KEYS: dict[str, tuple[str, ...]] = {
    "on_brief": ("on_brief", "onbrief", "on brief"),
    "occlusion": ("occlusion", "occluded", "text_occludes_product"),
    "contrast_ok": ("contrast_ok", "contrast"),
    "cta_present": ("cta_present", "cta", "call_to_action"),
}


def parse_judge(answer: str, prompt: str = "") -> JudgeVerdict:
    text = clean_answer(answer)
    obj = parse_json_object(text).value or {}
    unparsed: list[str] = []
    flags: dict[str, bool | None] = {}
    for name, keys in _JUDGE_KEYS.items():
        value = parse_bool(lookup(obj, *keys))
        if value is None:
            value = parse_bool(labelled(text, *keys) or "")
        if value is None:
            # JSON-ish fragments that failed json.loads as a whole: "on_brief": true
            alt = "|".join(re.escape(k).replace("_", "[_ ]?") for k in keys)
            m = re.search(rf'"?(?:{alt})"?\s*[:=]\s*"?(true|false|yes|no)\b', text, re.I)
            value = parse_bool(m.group(1)) if m else None
        flags[name] = value
        if value is None:
            unparsed.append(name)

    issues: list[str] | None = None
    raw_issues = lookup(obj, "issues")
    if isinstance(raw_issues, list):
        issues = [str(i).strip() for i in raw_issues if str(i).strip()]
    elif isinstance(raw_issues, str):
        issues = [] if _is_none_text(raw_issues) else [raw_issues.strip()]
    else:
        line = labelled(text, "issues", "problems")
        if line is not None:
            issues = [] if _is_none_text(line) else [s.strip() for s in re.split(r"[;•]", line) if s.strip()]
    if issues is None:
        unparsed.append("issues")
    reasoning = lookup(obj, "reasoning")
    if not isinstance(reasoning, str) or not reasoning.strip():
        reasoning = labelled(text, "reasoning", "reason")
    if reasoning is None:
        unparsed.append("reasoning")
    return JudgeVerdict(**flags, issues=tuple(issues or ()), reasoning=reasoning, raw=answer,
                        unparsed=tuple(unparsed), prompt=prompt)


def judge_batch(vlm: VlmGenerate, inputs: Sequence[JudgeInput],
                options: VlmOptions = VlmOptions()) -> list[JudgeVerdict]:
    """vlm_judge for several overlaid variants in one model call."""
    if not inputs:
        return []
    prompts = [judge_prompt(i.brief, i.headline) for i in inputs]
    answers = vlm.generate(
        [i.image for i in inputs], prompts, do_sample=options.judge_do_sample,
        temperature=options.judge_temperature, max_new_tokens=options.max_new_tokens,
        min_new_tokens=options.min_new_tokens, seed=[i.seed for i in inputs] if options.judge_do_sample else None,
    )
    return [parse_judge(a, p) for a, p in zip(answers, prompts, strict=True)]


def judge(vlm: VlmGenerate, inp: JudgeInput, options: VlmOptions = VlmOptions()) -> JudgeVerdict:
    return judge_batch(vlm, [inp], options)[0]
