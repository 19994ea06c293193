"""Find a font that can draw the overlay text, Hangul included, on a fresh machine (spec I11).

The original mapped styles to font files that were copied onto its servers by hand, and its
serif/italic choices were DejaVu fonts without Hangul, i.e. tofu boxes. Here:

1. ``VP_FONT_PATH`` (or an explicit path) wins, and is an error if it lacks a glyph of the text;
2. otherwise candidates come from the recommendation (font name, then style) mapped onto files
   that are installed, then general Hangul fonts, then whatever ``fc-list :lang=ko`` reports;
3. every candidate is checked to contain every character of the text, and the first that does
   is used; if none does, the error names the missing characters and what to install.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import ImageFont

from variant_pipeline.work.types import FontRecommendation

FONT_DIRS: tuple[str, ...] = (
    "/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts",
    "/Library/Fonts", "/System/Library/Fonts", "C:/Windows/Fonts",
)
FONT_EXTS = (".ttf", ".otf", ".ttc", ".otc")
INSTALL_HINT = (
    "install a font that has them (for Korean on Debian/Ubuntu: apt-get install fonts-nanum, "
    "or fonts-noto-cjk) or point VP_FONT_PATH at a .ttf/.otf that does"
)

# File stems (lower case, as installed by Debian's fonts-nanum / fonts-noto-cjk / fonts-unfonts
# and the original's custom fonts) in order of preference per style.
STYLE_FILES: dict[str, tuple[str, ...]] = {
    "sans-serif": ("nanumgothic", "nanumbarungothic", "nanumsquarer", "notosanscjk-regular",
                   "notosanskr-regular", "undotum", "gmarketsansttfmedium"),
    "serif": ("nanummyeongjo", "notoserifcjk-regular", "notoserifkr-regular", "unbatang"),
    "bold": ("nanumgothicbold", "nanumbarungothicbold", "nanumsquareb", "notosanscjk-bold",
             "notosanskr-bold", "nanummyeongjobold", "undotumbold"),
    # No Hangul italic face ships with the usual packages; an upright sans reads best.
    "italic": ("nanumgothic", "nanumbarungothic", "notosanscjk-regular"),
}
STYLE_ALIASES: dict[str, str] = {
    "sans": "sans-serif", "sans serif": "sans-serif", "sansserif": "sans-serif", "gothic": "sans-serif",
    "regular": "sans-serif", "normal": "sans-serif", "modern": "sans-serif",
    "myeongjo": "serif", "batang": "serif", "bold": "bold", "heavy": "bold", "black": "bold",
    "italic": "italic", "oblique": "italic", "script": "italic", "handwriting": "italic",
}
# Font names a recommender may give (Korean or Western), to file stems or to a style.
NAME_FILES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("nanum gothic bold", ("nanumgothicbold",)),
    ("nanum barun gothic bold", ("nanumbarungothicbold",)),
    ("nanum barun gothic", ("nanumbarungothic",)),
    ("nanum gothic coding", ("nanumgothiccoding",)),
    ("nanum gothic", ("nanumgothic",)),
    ("nanum myeongjo bold", ("nanummyeongjobold",)),
    ("nanum myeongjo", ("nanummyeongjo",)),
    ("nanum square round", ("nanumsquareroundr", "nanumsquareroundb")),
    ("nanum square", ("nanumsquarer", "nanumsquareb")),
    ("나눔고딕", ("nanumgothic",)),
    ("나눔명조", ("nanummyeongjo",)),
    ("나눔스퀘어", ("nanumsquarer",)),
    ("noto sans", ("notosanscjk-regular", "notosanskr-regular")),
    ("noto serif", ("notoserifcjk-regular", "notoserifkr-regular")),
    ("gmarket sans", ("gmarketsansttfmedium", "gmarketsansmedium")),
    ("pretendard", ("pretendardgov-bold", "pretendard-bold", "pretendard-regular")),
    ("jalnan", ("jalnan2ttf", "jalnan")),
    ("dohyeon", ("bm-dohyeon", "bmdohyeon")),
    ("euljiro", ("bm-euljiro", "bmeuljiro")),
)
NAME_STYLES: tuple[tuple[str, str], ...] = (
    ("malgun", "sans-serif"), ("dotum", "sans-serif"), ("gulim", "sans-serif"),
    ("apple sd gothic", "sans-serif"), ("arial", "sans-serif"), ("helvetica", "sans-serif"),
    ("roboto", "sans-serif"), ("open sans", "sans-serif"), ("montserrat", "bold"),
    ("impact", "bold"), ("batang", "serif"), ("gungsuh", "serif"), ("myeongjo", "serif"),
    ("times", "serif"), ("georgia", "serif"), ("garamond", "serif"), ("playfair", "serif"),
    ("brush", "italic"), ("script", "italic"),
)
KOREAN_RE = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")


class FontCoverageError(RuntimeError):
    """No usable font has every character of the text."""


@dataclass(frozen=True)
class FontChoice:
    path: str
    family: str  # the font's own family name, e.g. "NanumGothic"
    face: str  # the font's own style name, e.g. "Bold"
    index: int  # face index inside a .ttc collection
    source: str  # env | explicit | name | style | default | fc-list | any
    requested_name: str | None
    requested_style: str | None
    skipped: tuple[str, ...]  # candidates tried first that lacked a glyph ("path: chars")

    def load(self, size: int) -> ImageFont.FreeTypeFont:
        return ImageFont.truetype(self.path, size=size, index=self.index)

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@functools.lru_cache(maxsize=1)
def _installed_fonts() -> dict[str, str]:
    """Lower-case file stem -> path, over the usual font directories (first found wins)."""
    found: dict[str, str] = {}
    for d in FONT_DIRS:
        root = Path(os.path.expanduser(d))
        if not root.is_dir():
            continue
        for dirpath, _dirs, files in sorted(os.walk(root)):
            for f in sorted(files):
                if f.lower().endswith(FONT_EXTS):
                    found.setdefault(Path(f).stem.lower(), str(Path(dirpath) / f))
    return found


@functools.lru_cache(maxsize=1)
def _fc_list_korean() -> tuple[str, ...]:
    """Font files fontconfig says support Korean; empty if fontconfig is not installed."""
    exe = shutil.which("fc-list")
    if not exe:
        return ()
    try:
        out = subprocess.run([exe, ":lang=ko", "file"], capture_output=True, text=True,
                             timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    paths = {line.split(":")[0].strip() for line in out.splitlines() if line.strip()}
    return tuple(sorted(p for p in paths if p.lower().endswith(FONT_EXTS)))


def _stem_paths(stems: Iterable[str]) -> list[str]:
    installed = _installed_fonts()
    return [installed[s] for s in stems if s in installed]


def normalize_style(style: str | None) -> str | None:
    if not style:
        return None
    s = style.strip().lower().replace("_", " ")
    if s in STYLE_FILES:
        return s
    if s in STYLE_ALIASES:
        return STYLE_ALIASES[s]
    for key, value in STYLE_ALIASES.items():
        if key in s:
            return value
    return None


def _name_candidates(name: str | None) -> tuple[list[str], str | None]:
    """Files for a font name, and a style the name implies (for names we do not ship)."""
    if not name:
        return [], None
    n = re.sub(r"[\s_\-]+", " ", name.strip().lower())
    squashed = n.replace(" ", "")
    paths: list[str] = []
    for key, stems in NAME_FILES:
        if key in n or key.replace(" ", "") in squashed:
            paths += _stem_paths(stems)
    # A file stem named directly (e.g. "NanumSquareB").
    paths += _stem_paths([squashed])
    implied = next((style for key, style in NAME_STYLES if key in n), None)
    if implied is None and "bold" in n:
        implied = "bold"
    return paths, implied


def font_candidates(rec: FontRecommendation | None) -> list[tuple[str, str]]:
    """(path, source) in order of preference for a recommendation; no coverage check yet."""
    out: list[tuple[str, str]] = []
    name_paths, implied = _name_candidates(rec.name if rec else None)
    out += [(p, "name") for p in name_paths]
    style = normalize_style(rec.style if rec else None) or implied
    if style:
        out += [(p, "style") for p in _stem_paths(STYLE_FILES[style])]
    out += [(p, "default") for p in _stem_paths(STYLE_FILES["sans-serif"] + STYLE_FILES["bold"])]
    out += [(p, "fc-list") for p in _fc_list_korean()]
    # Last resort for text without Hangul on a machine without Korean fonts: anything installed.
    installed = _installed_fonts()
    out += [(p, "any") for p in _stem_paths(("dejavusans", "liberationsans-regular"))]
    out += [(installed[s], "any") for s in sorted(installed)]
    seen: set[str] = set()
    unique = []
    for p, src in out:
        if p not in seen:
            seen.add(p)
            unique.append((p, src))
    return unique


@functools.lru_cache(maxsize=64)
def _cmap(path: str, index: int) -> frozenset[int] | None:
    """Code points the font maps, via fontTools; None if fontTools is not installed."""
    try:
        from fontTools.ttLib import TTFont
    except ImportError:
        return None
    with TTFont(path, fontNumber=index, lazy=True) as font:
        cmap = font.getBestCmap() or {}
        return frozenset(cmap)


def _renders_as_notdef(font: ImageFont.FreeTypeFont, ch: str) -> bool:
    """Without fontTools: a missing character renders as the .notdef glyph (U+FFFF never exists)."""
    notdef = font.getmask("\uffff")
    glyph = font.getmask(ch)
    return glyph.size == notdef.size and bytes(glyph) == bytes(notdef)


def missing_glyphs(path: str | os.PathLike[str], text: str, index: int = 0) -> list[str]:
    """Characters of ``text`` (whitespace aside) that the font cannot draw, in text order."""
    chars = list(dict.fromkeys(ch for ch in text if not ch.isspace()))
    cmap = _cmap(str(path), index)
    if cmap is not None:
        return [ch for ch in chars if ord(ch) not in cmap]
    font = ImageFont.truetype(str(path), size=32, index=index)
    return [ch for ch in chars if _renders_as_notdef(font, ch)]


def _describe(chars: Sequence[str]) -> str:
    return ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in chars)


def _choice(path: str, source: str, rec: FontRecommendation | None,
            skipped: Sequence[str]) -> FontChoice:
    font = ImageFont.truetype(path, size=16)
    family, face = font.getname()
    return FontChoice(
        path=path, family=family or Path(path).stem, face=face or "", index=0, source=source,
        requested_name=rec.name if rec else None, requested_style=rec.style if rec else None,
        skipped=tuple(skipped),
    )


def resolve_font(
    text: str,
    rec: FontRecommendation | None = None,
    font_path: str | os.PathLike[str] | None = None,
    *,
    use_settings: bool = True,
) -> FontChoice:
    """The font to draw ``text`` with.

    ``font_path`` (else ``VP_FONT_PATH`` via the settings, when ``use_settings``) is used as is
    and must cover the text. Otherwise the recommendation is mapped onto installed fonts and the
    first one with every glyph of the text wins.
    """
    source = "explicit"
    if font_path is None and use_settings:
        from variant_pipeline.config import load_settings

        env_path = load_settings().font_path
        if env_path:
            font_path, source = env_path, "env"
    if font_path is not None:
        path = str(font_path)
        if not Path(path).is_file():
            raise FontCoverageError(f"font file {path!r} ({source}) does not exist")
        missing = missing_glyphs(path, text)
        if missing:
            raise FontCoverageError(
                f"font {path!r} ({'VP_FONT_PATH' if source == 'env' else source}) has no glyph for "
                f"{_describe(missing)}; {INSTALL_HINT}"
            )
        return _choice(path, source, rec, ())

    skipped: list[str] = []
    best_missing: list[str] | None = None
    for path, src in font_candidates(rec):
        try:
            missing = missing_glyphs(path, text)
        except Exception as exc:  # an unreadable font file is skipped, and said so
            skipped.append(f"{path}: unreadable ({exc})")
            continue
        if not missing:
            return _choice(path, src, rec, skipped)
        skipped.append(f"{path}: missing {''.join(missing)}")
        if best_missing is None or len(missing) < len(best_missing):
            best_missing = missing
    if best_missing is None:
        raise FontCoverageError(
            f"no Hangul-capable font found (searched {', '.join(FONT_DIRS)} and fc-list :lang=ko); "
            f"{INSTALL_HINT}"
        )
    raise FontCoverageError(
        f"no installed font covers the text; the best candidate still lacks {_describe(best_missing)} "
        f"(tried {len(skipped)} fonts); {INSTALL_HINT}"
    )


def has_korean(text: str) -> bool:
    return bool(KOREAN_RE.search(text))
