"""Text stages: the upstream copy steps and the job-level ``ad_copy_gen_kor`` / ``instagram_feed_gen``.

Every stage is a pure function over a ``TextModel`` and typed inputs; it returns a typed result
that carries the call (messages, parameters, raw answer, usage, latency) for ``llm_traces``.

Where the line between "flag it" and "fail" lies
------------------------------------------------
Model answers are cleaned first: Unicode NFC, and removal of U+FFFD, control, format (except the
emoji joiner), private-use and unassigned characters. Then:

* **Fail** (``TextStageError``): a required input is empty (the original stalled instead), or
  the cleaned answer has no letter or digit at all (empty, whitespace, punctuation or junk only).
  The orchestrator turns the error into a ``failed`` state with the message as the reason. No copy
  is ever invented to hide an unusable answer.
* **Flag and keep**: anything with readable content. The result records what went wrong in
  ``issues`` (e.g. ``"junk_removed:12"``, ``"no_hangul"``, ``"trimmed_to_10_chars"``) and, for the
  JSON stages, ``parsed_json=False`` with ``parse_error``. A tiny random-weight model therefore
  runs end to end, visibly flagged, instead of failing the demo.

The only synthesized text is the original's hashtag fallback: when the answer has no usable
hashtag, tags are derived from the description and the store information, and the result says
``hashtags_source == "fallback"``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from variant_pipeline.work.model_json import FENCE_RE, lookup, parse_json_object
from variant_pipeline.work.text_model import ChatMessage, ChatRequest, Completion, TextModel

# Decoding parameters, the original's: translation 0.3; the feed 0.7 in JSON mode; max_tokens 1000.
TRANSLATE_TEMPERATURE = 0.3
FEED_TEMPERATURE = 0.7
GPT_MAX_TOKENS = 1000
# The original does not state the upstream creative steps' settings; these are ours.
AD_COPY_TEMPERATURE = 0.7
AD_COPY_MAX_TOKENS = 120
SHORT_KOREAN_MAX_TOKENS = 60

MAX_SHORT_KOREAN_CHARS = 10  # the overlay line: at most 10 characters (spaces and punctuation free)
MAX_HASHTAGS = 10

OP_KOR_TO_ENG = "kor_to_eng"
OP_AD_COPY_ENG = "ad_copy_eng"
OP_AD_COPY_KOR = "ad_copy_kor"  # the short overlay line
OP_ENG_TO_KOR = "eng_to_kor"  # ad_copy_gen_kor
OP_FEED_GEN = "feed_gen"  # instagram_feed_gen


# --------------------------------------------------------------------------------------------
# Prompts (ours; what they ask for is what the original's asked for)
# --------------------------------------------------------------------------------------------

SYSTEM_PROMPTS: dict[str, str] = {
    OP_KOR_TO_ENG: (
        "You translate Korean menu and product descriptions for a restaurant's advertising. "
        "Convey the meaning in fluent, appetising English, the way a native copywriter would put it; "
        "do not translate word for word and do not add facts that are not in the source. "
        'Reply with a JSON object of the form {"translation_en": "<English text>"} and nothing else.'
    ),
    OP_AD_COPY_ENG: (
        "You are a copywriter for small food businesses. From the product description, write exactly "
        "one short English advertising line (about 12 words at most). Choose whichever angle suits the "
        "product best: the signature dish itself, a seasonal or limited-time hook, warmth and comfort, "
        "or a minimal brand-style statement, but never name the angle. Output only the line: no "
        "quotation marks, labels, hashtags, emojis or JSON."
    ),
    OP_AD_COPY_KOR: (
        "You write the Korean headline that is printed on top of a food advertisement image. Write one "
        "Korean phrase of at most 10 Hangul characters (spaces not counted), made only of nouns and "
        "adjectives (modifier forms such as 바삭한 or 따뜻한 are fine). No adverbs, no particles, no "
        "sentence endings, no emojis, hashtags or punctuation. Output only the phrase."
    ),
    OP_ENG_TO_KOR: (
        "You adapt English advertising copy into Korean for a restaurant's customers. Keep the meaning, "
        "the mood and roughly the same length and punch, so that it reads as if it had been written in "
        "Korean first. Output only the Korean copy on one line: no explanation, quotes or romanization."
    ),
    OP_FEED_GEN: (
        "You write Instagram posts for small Korean restaurants and food shops. Answer with one JSON "
        "object with exactly two string fields:\n"
        '- "instagram_ad_copy": the post body in Korean, friendly and natural, two to five short '
        "sentences, emojis welcome, no hashtags;\n"
        '- "hashtags": 5 to 10 Korean hashtags separated by single spaces, each starting with #, '
        "mixing tags about the dish with general food tags such as #맛집 #맛스타그램 #먹스타그램 "
        "#푸드스타그램 and, when the store information names a place, a location tag such as #성수맛집.\n"
        "Use only facts from the inputs; never invent prices, addresses or opening hours."
    ),
}

# The feed's user-facing instruction (stored as instagram_feeds.gpt_prompt).
DEFAULT_FEED_INSTRUCTION = (
    "단골손님과 처음 오는 손님 모두에게 말을 거는 듯한, 따뜻하고 생동감 있는 인스타그램 피드 글을 "
    "한국어로 써 주세요."
)


# --------------------------------------------------------------------------------------------
# Results and errors
# --------------------------------------------------------------------------------------------


class TextStageError(ValueError):
    """A text stage cannot produce a result: missing input or an unusable model answer."""

    def __init__(self, operation: str, reason: str, *, raw_text: str | None = None) -> None:
        message = f"{operation}: {reason}"
        if raw_text is not None:
            shown = raw_text if len(raw_text) <= 200 else raw_text[:200] + "..."
            message += f" (model answer: {shown!r})"
        super().__init__(message)
        self.operation = operation
        self.reason = reason
        self.raw_text = raw_text


@dataclass(frozen=True)
class LLMCall:
    """One model call as it happened, for ``llm_traces``."""

    operation: str
    provider: str
    model: str
    inputs: dict[str, Any]  # the stage's own inputs (e.g. ad_copy_eng)
    request: dict[str, Any]  # messages, temperature, max_tokens, json_mode, seed
    response_text: str  # the raw answer, before cleaning
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)

    def token_usage(self) -> dict[str, int | None]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}

    def to_trace(self, output: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON-able record: request (inputs + call), response (output + raw text + usage)."""
        return {
            "operation_type": self.operation,
            "provider": self.provider,
            "model": self.model,
            "request": {**self.inputs, **self.request, "operation": self.operation},
            "response": {**output, "raw_text": self.response_text, "finish_reason": self.finish_reason,
                         "token_usage": self.token_usage()},
            "latency_ms": self.latency_ms,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class EnglishDescription:
    text: str
    parsed_json: bool
    issues: tuple[str, ...]
    call: LLMCall

    def trace(self) -> dict[str, Any]:
        return self.call.to_trace({"translation_en": self.text, "parsed_json": self.parsed_json,
                                   "issues": list(self.issues)})


@dataclass(frozen=True)
class EnglishAdCopy:
    text: str
    issues: tuple[str, ...]
    call: LLMCall

    def trace(self) -> dict[str, Any]:
        return self.call.to_trace({"ad_copy_eng": self.text, "issues": list(self.issues)})


@dataclass(frozen=True)
class ShortKoreanAdCopy:
    """The overlay line: at most ``MAX_SHORT_KOREAN_CHARS`` letters/digits."""

    text: str
    model_text: str  # the cleaned answer before fitting to the limit
    trimmed: bool
    issues: tuple[str, ...]
    call: LLMCall

    def trace(self) -> dict[str, Any]:
        return self.call.to_trace({"ad_copy_kor": self.text, "model_text": self.model_text,
                                   "trimmed": self.trimmed, "issues": list(self.issues)})


@dataclass(frozen=True)
class KoreanAdCopy:
    ad_copy_kor: str
    ad_copy_eng: str
    issues: tuple[str, ...]
    call: LLMCall

    def trace(self) -> dict[str, Any]:
        return self.call.to_trace({"ad_copy_kor": self.ad_copy_kor, "issues": list(self.issues)})


@dataclass(frozen=True)
class FeedInputs:
    ad_copy_eng: str  # refined English copy, else the English ad copy (required)
    product_description: str  # job_inputs.desc_kor
    ad_copy_kor: str | None = None  # unlike the original, the model sees the Korean copy too
    tone_style: str = ""  # tone_styles.kor_name, else eng_name
    store_information: str = ""  # see format_store_information
    instruction: str = DEFAULT_FEED_INSTRUCTION


@dataclass(frozen=True)
class InstagramFeed:
    instagram_ad_copy: str
    hashtags: list[str]
    parsed_json: bool  # True when the copy came from a JSON object with the expected field
    parse_error: str | None
    hashtags_source: str  # "model" | "fallback"
    issues: tuple[str, ...]
    call: LLMCall
    inputs: FeedInputs
    temperature: float = FEED_TEMPERATURE
    max_tokens: int = GPT_MAX_TOKENS

    @property
    def hashtags_text(self) -> str:
        """``"#a #b #c"``, the form ``instagram_feeds.hashtags`` stores."""
        return " ".join(self.hashtags)

    def trace(self) -> dict[str, Any]:
        return self.call.to_trace({
            "instagram_ad_copy": self.instagram_ad_copy, "hashtags": self.hashtags_text,
            "parsed_json": self.parsed_json, "parse_error": self.parse_error,
            "hashtags_source": self.hashtags_source, "issues": list(self.issues),
        })


# --------------------------------------------------------------------------------------------
# Cleaning
# --------------------------------------------------------------------------------------------

_KEEP_CONTROL = {"\n", "\t"}
_ZWJ = "\u200d"  # joins emoji sequences; harmless


@dataclass(frozen=True)
class CleanText:
    text: str
    removed: int  # junk characters dropped


def clean_model_text(text: str) -> CleanText:
    """NFC, junk characters out, whitespace tidied (lines kept)."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    kept: list[str] = []
    removed = 0
    for ch in text:
        cat = unicodedata.category(ch)
        if ch == "\ufffd" or (cat == "Cc" and ch not in _KEEP_CONTROL) or cat in ("Cs", "Co", "Cn") \
                or (cat == "Cf" and ch != _ZWJ):
            removed += 1
            continue
        kept.append(ch)
    lines = [re.sub(r"[ \t\u00a0\u3000]+", " ", line).strip() for line in "".join(kept).split("\n")]
    cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return CleanText(cleaned, removed)


def has_readable_content(text: str) -> bool:
    return any(unicodedata.category(ch)[0] in ("L", "N") for ch in text)


def count_hangul(text: str) -> int:
    return sum(1 for ch in text if "\uac00" <= ch <= "\ud7a3")


def count_visible_chars(text: str) -> int:
    """Letters and digits: what the overlay limit counts (spaces and punctuation are free)."""
    return sum(1 for ch in text if unicodedata.category(ch)[0] in ("L", "N"))


_LABEL_RE = re.compile(
    r"^(?:translation(?:_en)?|english|korean|ad ?copy|headline|answer|output|copy|"
    r"번역|광고 ?문구|문구|한국어|답변|헤드라인)\s*[:：]\s*", re.I)
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "「": "」", "『": "』", "«": "»"}


def _strip_wrappers(line: str) -> str:
    line = _LABEL_RE.sub("", line.strip()).strip()
    for _ in range(2):
        if len(line) >= 2 and line[0] in _QUOTE_PAIRS and line[-1] == _QUOTE_PAIRS[line[0]]:
            line = line[1:-1].strip()
    return line


def _unfence(text: str) -> str:
    m = FENCE_RE.search(text)
    return m.group(2).strip() if m else text


def _single_line_answer(text: str) -> tuple[str, list[str]]:
    """The first meaningful line of a plain-text answer, without labels, quotes or fences."""
    issues: list[str] = []
    body = _unfence(text)
    # A model that answers with JSON despite being asked for plain text: take its first string.
    parsed = parse_json_object(body)
    if parsed.value is not None:
        s = _first_string(parsed.value)
        if s:
            issues.append("answered_json")
            body = s
    lines = []
    for line in body.split("\n"):
        bare = _TRAILING_TAGS_RE.sub("", line)  # hashtags the prompts forbid
        if bare != line and "hashtags_dropped" not in issues:
            issues.append("hashtags_dropped")
        if _strip_wrappers(bare):
            lines.append(_strip_wrappers(bare))
    if not lines:
        return "", issues
    if len(lines) > 1:
        issues.append("extra_lines_dropped")
    return lines[0], issues


def _first_string(obj: Mapping[str, Any]) -> str | None:
    for v in obj.values():
        if isinstance(v, str) and v.strip():
            return v
    return None


# --------------------------------------------------------------------------------------------
# Hashtags
# --------------------------------------------------------------------------------------------

_TAG_BODY_RE = re.compile(r"[^\W]+", re.UNICODE)  # letters, digits, underscore (Instagram's set)
_GENERIC_FALLBACK_TAGS = ("#맛스타그램", "#먹스타그램", "#푸드스타그램", "#한국음식", "#데일리")
_LOCATION_FALLBACK_TAGS = (("서울", "#서울맛집"), ("강남", "#강남맛집"))


def _tag_from(token: str, *, bare_ok: bool) -> str | None:
    token = token.strip()
    if not token.startswith("#") and not bare_ok:
        return None
    m = _TAG_BODY_RE.match(token.lstrip("#＃"))
    if not m or not has_readable_content(m.group(0)):
        return None
    return "#" + m.group(0)


def normalize_hashtags(raw: str | Sequence[Any] | None, *, limit: int = MAX_HASHTAGS) -> list[str]:
    """``#`` tokens only, trailing punctuation cut, de-duplicated in order, at most ``limit``.

    In a string only tokens starting with ``#`` count (as in the original). In a JSON list each
    element is unambiguously meant as a tag, so a bare word gets its ``#``.
    """
    tags: list[str] = []
    if raw is None:
        return tags
    if isinstance(raw, str):
        items: list[tuple[str, bool]] = [(raw, False)]
    else:
        items = [(str(x), True) for x in raw if isinstance(x, str | int)]
    for item, from_list in items:
        text = clean_model_text(item).text.replace("＃", "#")
        tokens = [t for t in re.split(r"[\s,;、，]+", re.sub(r"(?<=\w)#", " #", text)) if t]
        bare_ok = from_list and len(tokens) == 1
        for token in tokens:
            tag = _tag_from(token, bare_ok=bare_ok)
            if tag:
                tags.append(tag)
    out: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        key = tag.casefold()
        if key not in seen:
            seen.add(key)
            out.append(tag)
    return out[:limit]


def fallback_hashtags(product_description: str, store_information: str = "", *,
                      limit: int = MAX_HASHTAGS) -> list[str]:
    """The original's fallback when the model gave no usable hashtag: tags from the dish named in
    the description, the usual food tags, and the place named in the store information."""
    desc = product_description or ""
    store = store_information or ""
    tags: list[str] = []
    if "부대찌개" in desc:
        tags.append("#부대찌개")
    if "맛집" in desc or "맛" in desc:
        tags.append("#맛집")
    tags.extend(_GENERIC_FALLBACK_TAGS)
    tags.extend(tag for place, tag in _LOCATION_FALLBACK_TAGS if place in store)
    return normalize_hashtags(" ".join(tags), limit=limit)


_TRAILING_TAGS_RE = re.compile(r"(?:\s*[#＃][^\s#＃]+)+\s*$")


def _split_trailing_hashtags(text: str) -> tuple[str, list[str]]:
    """Hashtags at the end of a post body (same line or their own lines) belong in the hashtag
    field; mid-sentence ones stay in the text."""
    m = _TRAILING_TAGS_RE.search(text)
    if not m:
        return text, []
    return text[:m.start()].rstrip(), normalize_hashtags(m.group(0), limit=10_000)


def format_store_information(title: str | None, body: str | None = None, category: str | None = None) -> str:
    """``stores.title, stores.body, 카테고리: category`` joined as the original builds it (empties skipped)."""
    parts = [p.strip() for p in (title, body) if p and p.strip()]
    if category and category.strip():
        parts.append(f"카테고리: {category.strip()}")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Calling the model
# --------------------------------------------------------------------------------------------


def _call(model: TextModel, operation: str, user: str, *, inputs: dict[str, Any], temperature: float,
          max_tokens: int, json_mode: bool = False, seed: int | None = None) -> tuple[Completion, LLMCall]:
    request = ChatRequest(
        messages=(ChatMessage("system", SYSTEM_PROMPTS[operation]), ChatMessage("user", user)),
        temperature=temperature, max_tokens=max_tokens, json_mode=json_mode, seed=seed)
    completion = model.complete(request.messages, temperature=temperature, max_tokens=max_tokens,
                                json_mode=json_mode, seed=seed)
    call = LLMCall(
        operation=operation,
        provider=getattr(model, "provider", type(model).__name__),
        model=completion.model,
        inputs=dict(inputs),
        request=request.to_dict(),
        response_text=completion.text,
        finish_reason=completion.finish_reason,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        latency_ms=completion.latency_ms,
    )
    return completion, call


def _require(operation: str, name: str, value: str | None) -> str:
    if value is None or not value.strip():
        raise TextStageError(operation, f"missing input: {name} is empty")
    return value.strip()


def _clean_or_fail(operation: str, raw: str) -> tuple[str, list[str]]:
    cleaned = clean_model_text(raw)
    if not has_readable_content(cleaned.text):
        raise TextStageError(operation, "the model's answer has no readable text", raw_text=raw)
    issues = [f"junk_removed:{cleaned.removed}"] if cleaned.removed else []
    return cleaned.text, issues


def _finish_issues(call: LLMCall) -> list[str]:
    return ["truncated_at_max_tokens"] if call.finish_reason == "length" else []


# --------------------------------------------------------------------------------------------
# Upstream steps (used when a job arrives without them)
# --------------------------------------------------------------------------------------------


def translate_description_to_english(model: TextModel, desc_kor: str, *,
                                     seed: int | None = None) -> EnglishDescription:
    """Korean product description → natural English (JSON ``{translation_en}``), temperature 0.3."""
    desc_kor = _require(OP_KOR_TO_ENG, "desc_kor", desc_kor)
    completion, call = _call(model, OP_KOR_TO_ENG, desc_kor, inputs={"desc_kor": desc_kor},
                             temperature=TRANSLATE_TEMPERATURE, max_tokens=GPT_MAX_TOKENS,
                             json_mode=True, seed=seed)
    text, issues = _clean_or_fail(OP_KOR_TO_ENG, completion.text)
    issues += _finish_issues(call)
    parsed = parse_json_object(text)
    translation = None
    if parsed.value is not None:
        found = lookup(parsed.value, "translation_en", "translation", "english", "text")
        translation = found if isinstance(found, str) else _first_string(parsed.value)
    parsed_json = translation is not None
    if translation is None:
        issues.append(f"json_unparsed: {parsed.error or 'no translation_en field'}")
        translation = _unfence(text)
    translation = " ".join(_strip_wrappers(line) for line in clean_model_text(translation).text.split("\n"))
    translation = translation.strip()
    if not has_readable_content(translation):
        raise TextStageError(OP_KOR_TO_ENG, "the model's answer has no readable translation",
                             raw_text=completion.text)
    return EnglishDescription(translation, parsed_json, tuple(issues), call)


def write_english_ad_copy(model: TextModel, desc_eng: str, *, seed: int | None = None) -> EnglishAdCopy:
    """One English ad line from the English description."""
    desc_eng = _require(OP_AD_COPY_ENG, "desc_eng", desc_eng)
    completion, call = _call(model, OP_AD_COPY_ENG, f"Product description:\n{desc_eng}",
                             inputs={"desc_eng": desc_eng}, temperature=AD_COPY_TEMPERATURE,
                             max_tokens=AD_COPY_MAX_TOKENS, seed=seed)
    text, issues = _clean_or_fail(OP_AD_COPY_ENG, completion.text)
    line, more = _single_line_answer(text)
    if not has_readable_content(line):
        raise TextStageError(OP_AD_COPY_ENG, "the model's answer has no readable ad copy",
                             raw_text=completion.text)
    return EnglishAdCopy(line, tuple(issues + more + _finish_issues(call)), call)


def fit_short_korean(text: str, limit: int = MAX_SHORT_KOREAN_CHARS) -> tuple[str, bool]:
    """Fit the overlay line to ``limit`` letters/digits: whole words while they fit, else a hard cut
    of the first word. Returns (text, trimmed)."""
    text = text.strip()
    if count_visible_chars(text) <= limit:
        return text, False
    kept: list[str] = []
    used = 0
    for word in text.split():
        n = count_visible_chars(word)
        if used + n > limit:
            break
        kept.append(word)
        used += n
    if not kept:
        out: list[str] = []
        used = 0
        for ch in text.split()[0]:
            if unicodedata.category(ch)[0] in ("L", "N"):
                if used == limit:
                    break
                used += 1
            out.append(ch)
        kept = ["".join(out)]
    return " ".join(kept).rstrip(" ,.;:·-~"), True


def _overlay_safe(line: str) -> str:
    """Only what a Hangul text font can draw and the prompt allowed: letters, digits, spaces and a
    little punctuation. Emojis and symbols would render as tofu boxes on the image."""
    line = re.sub(r"[#＃]\S*", " ", line)
    kept = [ch for ch in line if unicodedata.category(ch)[0] in ("L", "N", "M", "Z")
            or ch in "!?.,·&~-"]
    return re.sub(r"\s+", " ", "".join(kept)).strip(" ,.·-~")


def write_short_korean_ad_copy(model: TextModel, desc_kor: str, ad_copy_eng: str, *,
                               seed: int | None = None,
                               limit: int = MAX_SHORT_KOREAN_CHARS) -> ShortKoreanAdCopy:
    """The short Korean line drawn on the image (at most ``limit`` letters/digits).

    The answer's first line is kept without labels, quotes, hashtags and emojis. If it is longer
    than the limit it is trimmed at a word boundary (or hard-cut when the first word alone is too
    long) and ``trimmed`` is set, rather than asking the model again.
    """
    desc_kor = _require(OP_AD_COPY_KOR, "desc_kor", desc_kor)
    ad_copy_eng = _require(OP_AD_COPY_KOR, "ad_copy_eng", ad_copy_eng)
    user = (f"Product description (Korean): {desc_kor}\nEnglish ad copy: {ad_copy_eng}\n"
            f"Korean headline, at most {limit} characters:")
    completion, call = _call(model, OP_AD_COPY_KOR, user,
                             inputs={"desc_kor": desc_kor, "ad_copy_eng": ad_copy_eng},
                             temperature=AD_COPY_TEMPERATURE, max_tokens=SHORT_KOREAN_MAX_TOKENS, seed=seed)
    text, issues = _clean_or_fail(OP_AD_COPY_KOR, completion.text)
    line, more = _single_line_answer(text)
    issues += more
    line = _overlay_safe(line)
    if not has_readable_content(line):
        raise TextStageError(OP_AD_COPY_KOR, "the model's answer has no readable Korean line",
                             raw_text=completion.text)
    fitted, trimmed = fit_short_korean(line, limit)
    if trimmed:
        issues.append(f"trimmed_to_{limit}_chars")
    if count_hangul(fitted) == 0:
        issues.append("no_hangul")
    return ShortKoreanAdCopy(fitted, line, trimmed, tuple(issues + _finish_issues(call)), call)


# --------------------------------------------------------------------------------------------
# Job-level stages
# --------------------------------------------------------------------------------------------


def ad_copy_gen_kor(model: TextModel, ad_copy_eng: str, *, seed: int | None = None) -> KoreanAdCopy:
    """English ad copy → Korean ad copy for the feed: temperature 0.3, max_tokens 1000.

    A missing English copy is an error here (the original answered 400 and left the job stalled).
    """
    ad_copy_eng = _require(OP_ENG_TO_KOR, "ad_copy_eng", ad_copy_eng)
    completion, call = _call(model, OP_ENG_TO_KOR, f"English ad copy:\n{ad_copy_eng}",
                             inputs={"ad_copy_eng": ad_copy_eng}, temperature=TRANSLATE_TEMPERATURE,
                             max_tokens=GPT_MAX_TOKENS, seed=seed)
    text, issues = _clean_or_fail(OP_ENG_TO_KOR, completion.text)
    line, more = _single_line_answer(text)
    issues += more
    if not has_readable_content(line):
        raise TextStageError(OP_ENG_TO_KOR, "the model's answer has no readable Korean copy",
                             raw_text=completion.text)
    if count_hangul(line) == 0:
        issues.append("no_hangul")
    return KoreanAdCopy(line, ad_copy_eng, tuple(issues + _finish_issues(call)), call)


def feed_user_prompt(inputs: FeedInputs) -> str:
    none = "(없음)"
    return (
        f"{inputs.instruction}\n\n"
        f"Korean headline printed on the ad image: {inputs.ad_copy_kor or none}\n"
        f"English ad copy: {inputs.ad_copy_eng}\n"
        f"Tone: {inputs.tone_style or none}\n"
        f"Product description: {inputs.product_description or none}\n"
        f"Store information: {inputs.store_information or none}\n\n"
        "Return the JSON object now."
    )


@dataclass(frozen=True)
class ParsedFeed:
    instagram_ad_copy: str
    hashtags: list[str]
    parsed_json: bool
    parse_error: str | None
    hashtags_source: str
    issues: tuple[str, ...] = field(default_factory=tuple)


_COPY_KEYS = ("instagram_ad_copy", "ad_copy", "caption", "post", "feed", "copy", "body", "text", "content")
_TAG_KEYS = ("hashtags", "hashtag", "tags")
_COPY_FIELD_RE = re.compile(r'["\']?instagram_ad_copy["\']?\s*:\s*(["\'])((?:\\.|(?!\1).)*)', re.S)
_TAGS_FIELD_RE = re.compile(r'["\']?hashtags["\']?\s*:\s*(.*)', re.S)


def parse_feed_answer(text: str, *, product_description: str = "", store_information: str = "",
                      operation: str = OP_FEED_GEN) -> ParsedFeed:
    """The feed from a model answer: JSON when possible, else the field by pattern, else the text.

    Raises ``TextStageError`` when no readable post body is left.
    """
    cleaned = clean_model_text(text)
    issues: list[str] = [f"junk_removed:{cleaned.removed}"] if cleaned.removed else []
    body = cleaned.text
    parsed = parse_json_object(body)
    copy: str | None = None
    raw_tags: Any = None
    parse_error: str | None = None
    if parsed.value is not None:
        found = lookup(parsed.value, *_COPY_KEYS)
        copy = found if isinstance(found, str) else None
        raw_tags = lookup(parsed.value, *_TAG_KEYS)
        if copy is None:
            parse_error = "the JSON object has no instagram_ad_copy text"
        elif parsed.repaired:
            issues.append("json_repaired")
    else:
        parse_error = parsed.error
    parsed_json = copy is not None
    if copy is None:
        m = _COPY_FIELD_RE.search(body)
        if m:  # broken JSON whose copy field is still readable
            copy = m.group(2).replace('\\"', '"').replace("\\n", "\n")
            t = _TAGS_FIELD_RE.search(body[m.end():])
            raw_tags = t.group(1) if t else body[m.end():]
            issues.append("copy_from_pattern")
        else:
            copy = _unfence(body)
            if raw_tags is None:
                raw_tags = copy  # any #tokens in the prose
            issues.append("copy_from_text")
    copy, trailing = _split_trailing_hashtags(clean_model_text(copy).text)
    if trailing:
        issues.append("hashtags_moved_from_copy")
    if isinstance(raw_tags, list | tuple):
        tags = normalize_hashtags(list(raw_tags) + trailing)
    else:
        tags = normalize_hashtags(f"{raw_tags if isinstance(raw_tags, str) else ''} {' '.join(trailing)}")
    source = "model"
    if not tags:
        tags = fallback_hashtags(product_description, store_information)
        source = "fallback"
    if not has_readable_content(copy):
        raise TextStageError(operation, "the model's answer has no readable post text", raw_text=text)
    return ParsedFeed(copy, tags, parsed_json, parse_error, source, tuple(issues))


def instagram_feed_gen(model: TextModel, inputs: FeedInputs, *, seed: int | None = None) -> InstagramFeed:
    """Instagram post + hashtags: temperature 0.7, JSON mode, max_tokens 1000."""
    _require(OP_FEED_GEN, "ad_copy_eng", inputs.ad_copy_eng)
    trace_inputs = {
        "refined_ad_copy_eng": inputs.ad_copy_eng, "ad_copy_kor": inputs.ad_copy_kor,
        "tone_style": inputs.tone_style, "product_description": inputs.product_description,
        "store_information": inputs.store_information, "gpt_prompt": inputs.instruction,
    }
    completion, call = _call(model, OP_FEED_GEN, feed_user_prompt(inputs), inputs=trace_inputs,
                             temperature=FEED_TEMPERATURE, max_tokens=GPT_MAX_TOKENS, json_mode=True,
                             seed=seed)
    feed = parse_feed_answer(completion.text, product_description=inputs.product_description,
                             store_information=inputs.store_information)
    issues = feed.issues + tuple(_finish_issues(call))
    if count_hangul(feed.instagram_ad_copy) == 0:
        issues += ("no_hangul",)
    return InstagramFeed(
        instagram_ad_copy=feed.instagram_ad_copy, hashtags=feed.hashtags, parsed_json=feed.parsed_json,
        parse_error=feed.parse_error, hashtags_source=feed.hashtags_source, issues=issues, call=call,
        inputs=inputs,
    )
