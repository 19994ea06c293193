"""The one lenient reader of JSON objects in model answers (VLM verdicts, text-model copy).

Hand-written because json-repair fails four of our extractor cases: it lets a bare object beat a
fenced one, reads ``{"a": }`` as ``{"a": ""}`` and garbage as ``{}``, and keeps ``on\\_brief``'s backslash.

Models wrap JSON in prose or code fences, use Python literals and single quotes, leave trailing
commas, escape underscores (LLaVA writes ``on\\_brief``), or stop mid-object at max_tokens.
``parse_json_object`` tries, in order: the whole answer, each fenced block, each balanced
``{...}`` span, then the answer cut off after its first ``{`` and closed. Each candidate is read
as JSON, then repaired (typographic quotes, escaped underscores, trailing commas), then as a
Python literal with JSON's ``true``/``false``/``null``.

Keys are matched by one rule, ``norm_key``: case-folded, with every character that is not a
letter or digit removed, so ``On-Brief``, ``on_brief``, ``onBrief`` and ``on brief`` are one key.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

NO_OBJECT = "no JSON object in the answer"
FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n?(.*?)(?:```|$)", re.S)
_MAX_STARTS = 20  # braces tried as object starts; a long garbage answer must not cost quadratic time


@dataclass(frozen=True)
class JsonParse:
    value: dict[str, Any] | None
    error: str | None  # why nothing could be parsed (None on success)
    repaired: bool = False  # parsed only after a repair (fences, quotes, commas, ...)


def norm_key(key: object) -> str:
    """The one key normalisation: case-folded letters and digits only (Unicode letters kept)."""
    return re.sub(r"[\W_]+", "", str(key).casefold())


def lookup(obj: Mapping[str, Any], *names: str) -> Any:
    """The first of ``names`` present with a value (not None or ""), by ``norm_key``; also one
    level down, for answers that nest their fields in a wrapper object."""
    index = {norm_key(k): v for k, v in obj.items()}
    for name in names:
        value = index.get(norm_key(name))
        if value not in (None, ""):
            return value
    for value in obj.values():
        if isinstance(value, Mapping):
            found = lookup(value, *names)
            if found not in (None, ""):
                return found
    return None


def parse_json_object(text: str | None) -> JsonParse:
    """A JSON object from a model answer; ``value`` is None with the reason when nothing works."""
    if not text or "{" not in text:
        return JsonParse(None, NO_OBJECT)
    last_error = NO_OBJECT
    seen: set[str] = set()
    for candidate in _candidates(text):
        if not candidate or candidate in seen:
            continue
        seen.add(candidate)
        try:
            obj = _as_object(json.loads(candidate))
            if obj is not None:
                return JsonParse(obj, None, repaired=candidate != text.strip())
            last_error = "the JSON value is not an object"
            continue
        except (ValueError, RecursionError) as e:
            last_error = (f"invalid JSON: {e.msg} at position {e.pos}" if isinstance(e, json.JSONDecodeError)
                          else f"invalid JSON: {e}")
        repaired = _repair(candidate)
        for read in (json.loads, _python_literal):
            try:
                obj = _as_object(read(repaired))
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if obj is not None:
                return JsonParse(obj, None, repaired=True)
    return JsonParse(None, last_error)


def _candidates(text: str) -> Iterator[str]:
    yield text.strip()
    for m in FENCE_RE.finditer(text):
        yield m.group(2).strip()
    starts = [i for i, ch in enumerate(text) if ch == "{"][:_MAX_STARTS]
    for i in starts:
        obj = _balanced_object(text, i)
        if obj:
            yield obj
    if starts:
        # Cut off (max_tokens): close what is open.
        tail = text[starts[0]:].rstrip().rstrip(",")
        for closer in ('"}', "}", '"]}', "]}"):
            yield tail + closer


def _balanced_object(text: str, start: int) -> str | None:
    """The ``{...}`` starting at ``start``, respecting strings in either quote style."""
    depth = 0
    quote: str | None = None
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in ('"', "'"):
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return None


TYPOGRAPHIC_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})


def _repair(candidate: str) -> str:
    s = candidate.translate(TYPOGRAPHIC_QUOTES).replace("\\_", "_")
    return re.sub(r",\s*([}\]])", r"\1", s)  # trailing commas


_JSON_NAMES = {"true": True, "false": False, "null": None}


class _JsonNamesToConstants(ast.NodeTransformer):
    """``true``/``false``/``null`` as Python constants; names inside strings stay untouched."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in _JSON_NAMES:
            return ast.copy_location(ast.Constant(_JSON_NAMES[node.id]), node)
        return node


def _python_literal(s: str) -> Any:
    """A Python-style dict (single quotes, ``True``/``None``), JSON literals allowed too."""
    return ast.literal_eval(_JsonNamesToConstants().visit(ast.parse(s, mode="eval")))


def _as_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        return value[0]
    return None
