"""Find the fonts that can draw the overlay text, Hangul included, on a fresh machine.

The original mapped styles to font files that were copied onto its servers by hand, and its
serif/italic choices were DejaVu fonts without Hangul, i.e. tofu boxes. Here:

1. ``VP_FONT_PATH`` (or an explicit path) wins, and is an error if it lacks a letter or digit of
   the text;
2. otherwise candidates come from the recommendation (font name, then style) mapped onto files
   that are installed, then general Hangul fonts, then whatever ``fc-list :lang=ko`` reports;
3. every candidate is checked against every character of the text: the first that has them all
   is the primary font, else the one that lacks the fewest letters and digits;
4. each character the primary lacks (a symbol, an emoji, another script) is drawn by the first
   other installed font that has it, colour emoji fonts first for emoji (``FontChain``); if no
   installed font has it, the error names the characters, their code points and what to install.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from variant_pipeline.work.types import FontRecommendation

FONT_DIRS: tuple[str, ...] = (
    "/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts",
    "/Library/Fonts", "/System/Library/Fonts", "C:/Windows/Fonts",
)
FONT_EXTS = (".ttf", ".otf", ".ttc", ".otc")
INSTALL_HINT = (
    "install a font that has them (for Korean on Debian/Ubuntu: apt-get install fonts-nanum, "
    "or fonts-noto-cjk; for emoji: fonts-noto-color-emoji) or point VP_FONT_PATH at a .ttf/.otf that does"
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
    # Bitmap-only fonts (colour emoji such as Noto Color Emoji) load at this one pixel size only
    # and are scaled to the text size; None for outline fonts.
    strike: int | None = None
    color: bool = False  # has its own colours (emoji): drawn as is, never in the text colour

    def load(self, size: int) -> ImageFont.FreeTypeFont:
        """The font at ``size`` px; a bitmap-only font at its strike (scale it by ``scale(size)``)."""
        return ImageFont.truetype(self.path, size=self.strike or size, index=self.index)

    def scale(self, size: int) -> float:
        return size / self.strike if self.strike else 1.0

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
    """Characters of ``text`` (whitespace and invisible format characters aside) that the font
    cannot draw, in text order."""
    chars = _visible_chars(text)
    cmap = _cmap(str(path), index)
    if cmap is not None:
        return [ch for ch in chars if ord(ch) not in cmap]
    font = ImageFont.truetype(str(path), size=32, index=index)
    return [ch for ch in chars if _renders_as_notdef(font, ch)]


def _describe(chars: Sequence[str]) -> str:
    return ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in chars)


def _is_invisible(ch: str) -> bool:
    """Format characters and variation selectors (ZWJ, U+FE0F, ...): they draw nothing themselves."""
    cp = ord(ch)
    return unicodedata.category(ch) == "Cf" or 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF


def _visible_chars(text: str) -> list[str]:
    """The distinct characters that need a glyph, in text order."""
    return list(dict.fromkeys(ch for ch in text if not ch.isspace() and not _is_invisible(ch)))


def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in ("L", "N")


@functools.lru_cache(maxsize=1)
def _emoji_presentation() -> Any:
    try:  # `regex` knows the Unicode emoji properties (a dependency of transformers)
        import regex
    except ImportError:
        return None
    return regex.compile(r"\p{Emoji_Presentation}")


def _wants_color(text: str) -> set[str]:
    """Characters to draw from a colour (emoji) font where one has them: emoji by default (☕, 🔥),
    or asked for with U+FE0F (❤️); U+FE0E after a character asks for its text style."""
    pattern = _emoji_presentation()
    out: set[str] = set()
    text_style: set[str] = set()
    for ch, nxt in zip(text, text[1:] + " ", strict=True):
        if nxt == "\ufe0e":
            text_style.add(ch)
        elif nxt == "\ufe0f" or (pattern.match(ch) if pattern is not None else ord(ch) >= 0x1F000):
            out.add(ch)
    return out - text_style


@functools.lru_cache(maxsize=64)
def _font_kind(path: str, index: int) -> tuple[int | None, bool]:
    """(strike, colour): the pixel size a bitmap-only font must load at (None for outline fonts),
    and whether the font carries its own colours."""
    try:
        from fontTools.ttLib import TTFont
    except ImportError:
        return None, False  # a bitmap-only font then fails to load and is skipped as unreadable
    with TTFont(path, fontNumber=index, lazy=True) as font:
        color = any(tag in font for tag in ("CBDT", "sbix", "COLR"))
        if any(tag in font for tag in ("glyf", "CFF ", "CFF2")):
            return None, color
        strikes = [int(st.bitmapSizeTable.ppemY) for tag in ("CBLC", "EBLC") if tag in font
                   for st in font[tag].strikes]
        if "sbix" in font:
            strikes += [int(ppem) for ppem in font["sbix"].strikes]
        return (max(strikes) if strikes else None), color


def _choice(path: str, source: str, rec: FontRecommendation | None,
            skipped: Sequence[str]) -> FontChoice:
    strike, color = _font_kind(path, 0)
    font = ImageFont.truetype(path, size=strike or 16)
    family, face = font.getname()
    return FontChoice(
        path=path, family=family or Path(path).stem, face=face or "", index=0, source=source,
        requested_name=rec.name if rec else None, requested_style=rec.style if rec else None,
        skipped=tuple(skipped), strike=strike, color=color,
    )


def _has_glyph(path: str, ch: str) -> bool:
    try:
        return not missing_glyphs(path, ch)
    except Exception:  # an unreadable font file draws nothing
        return False


@dataclass(frozen=True)
class FontChain:
    """The fonts that draw one text: the primary draws every character it has; each other
    character is drawn by the first fallback that has it (colour fonts first for emoji), so
    mixed scripts, symbols and emoji never become tofu boxes."""

    primary: FontChoice
    fallbacks: tuple[FontChoice, ...] = ()
    # Visible character -> index into ``fonts`` (0 = the primary).
    assignment: tuple[tuple[str, int], ...] = ()
    # Whitespace and invisible characters -> the fonts (indices) that have a glyph for them.
    optional: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def fonts(self) -> tuple[FontChoice, ...]:
        return (self.primary, *self.fallbacks)

    @property
    def needs_runs(self) -> bool:
        """Whether the text must be drawn run by run (not every character is the primary's)."""
        return bool(self.fallbacks) or any(0 not in fonts for _ch, fonts in self.optional)

    def runs(self, text: str) -> list[tuple[int, str]]:
        """``text`` cut into (font index, piece) runs, in order."""
        assigned, optional = dict(self.assignment), dict(self.optional)
        runs: list[tuple[int, str]] = []
        for ch in text:
            current = runs[-1][0] if runs else 0
            idx = assigned.get(ch)
            if idx is None:
                have = optional.get(ch)
                if have is None:
                    idx = current  # not a character of the resolved text: it stays in the run
                elif _is_invisible(ch):
                    if current not in have:
                        continue  # a joiner or selector the run's font lacks draws nothing anyway
                    idx = current
                elif 0 in have:
                    idx = 0  # spaces are the primary's (an emoji font's space is emoji-wide)
                elif have:
                    idx = current if current in have else have[0]
                else:
                    idx, ch = current, " "  # a space no font has is drawn as a plain space
            if runs and runs[-1][0] == idx:
                runs[-1] = (idx, runs[-1][1] + ch)
            else:
                runs.append((idx, ch))
        return runs

    def load(self, size: int) -> ImageFont.FreeTypeFont | ChainedFont:
        """A plain font when the primary draws everything, else a ``ChainedFont``."""
        return ChainedFont(self, size) if self.needs_runs else self.primary.load(size)

    def fallback_report(self) -> list[dict[str, object]]:
        """Which fallback drew which characters (for the layout record)."""
        chars: dict[int, str] = {}
        for ch, idx in self.assignment:
            if idx:
                chars[idx] = chars.get(idx, "") + ch
        return [{"path": f.path, "font_name": f"{f.family} {f.face}".strip(), "color": f.color,
                 "chars": chars.get(i, "")} for i, f in enumerate(self.fonts) if i]


class ChainedFont:
    """A ``FontChain`` at one pixel size: measures and draws text run by run, each run in its font.

    Lines are laid out as PIL lays out multiline text with anchor "mm" and align "center" (line
    pitch: the primary's height of "A" plus the spacing; each line centred on the anchor, the block
    around it), on one baseline per line. Outline glyphs go into a coverage mask drawn later in the
    text colour; colour glyphs (emoji) into an RGBA layer, drawn as they are.
    """

    def __init__(self, chain: FontChain, size: int) -> None:
        self.chain = chain
        self.size = size
        self.fonts = [f.load(size) for f in chain.fonts]
        self.scales = [f.scale(size) for f in chain.fonts]

    def _length(self, idx: int, run: str) -> float:
        return self.fonts[idx].getlength(run) * self.scales[idx]

    def getlength(self, text: str) -> float:
        return sum(self._length(i, run) for i, run in self.chain.runs(text))

    def _placed(self, xy: tuple[float, float], lines: Sequence[str],
                spacing: float) -> list[tuple[int, str, float, float]]:
        """(font index, run, x, baseline y) of every run."""
        primary = self.fonts[0]
        pitch = primary.getbbox("A")[3] + spacing
        ascent, descent = primary.getmetrics()
        top = xy[1] - (len(lines) - 1) * pitch / 2
        placed = []
        for line in lines:
            runs = self.chain.runs(line)
            x = xy[0] - sum(self._length(i, run) for i, run in runs) / 2
            baseline = top + (ascent - descent) / 2  # the "m" anchor: halfway between ascent and descent
            for i, run in runs:
                placed.append((i, run, x, baseline))
                x += self._length(i, run)
            top += pitch
        return placed

    def run_boxes(self, xy: tuple[float, float], lines: Sequence[str],
                  spacing: float) -> list[tuple[int, str, tuple[float, float, float, float]]]:
        """(font index, run, box) of every run of ``lines`` drawn centred on ``xy``."""
        out = []
        for i, run, x, y in self._placed(xy, lines, spacing):
            left, top, right, bottom = self.fonts[i].getbbox(run, anchor="ls")
            s = self.scales[i]
            out.append((i, run, (x + left * s, y + top * s, x + right * s, y + bottom * s)))
        return out

    def bbox(self, lines: Sequence[str], spacing: float,
             xy: tuple[float, float] = (0, 0)) -> tuple[float, float, float, float]:
        boxes = [box for _i, _run, box in self.run_boxes(xy, lines, spacing)]
        if not boxes:
            return (xy[0], xy[1], xy[0], xy[1])
        return (min(b[0] for b in boxes), min(b[1] for b in boxes),
                max(b[2] for b in boxes), max(b[3] for b in boxes))

    def draw(self, coverage: Image.Image, pictures: Image.Image, xy: tuple[float, float],
             lines: Sequence[str], spacing: float) -> None:
        """Draw ``lines`` centred on ``xy``: outline glyphs into ``coverage`` (mode L), colour
        glyphs into ``pictures`` (RGBA, the same size)."""
        ink = ImageDraw.Draw(coverage)
        for i, run, x, y in self._placed(xy, lines, spacing):
            choice, font, s = self.chain.fonts[i], self.fonts[i], self.scales[i]
            if not choice.color and s == 1.0:
                ink.text((x, y), run, fill=255, font=font, anchor="ls")
                continue
            left, top, right, bottom = font.getbbox(run, anchor="ls")
            if right <= left or bottom <= top:
                continue
            tile = Image.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
            ImageDraw.Draw(tile).text((-left, -top), run, fill=(255, 255, 255, 255), font=font, anchor="ls",
                                      embedded_color=choice.color)
            if s != 1.0:  # a bitmap strike (109 px for Noto Color Emoji) scaled to the text size
                tile = tile.resize((max(1, round(tile.width * s)), max(1, round(tile.height * s))),
                                   Image.Resampling.LANCZOS)
            pos = (round(x + left * s), round(y + top * s))
            if choice.color:
                _composite(pictures, tile, pos)
            else:
                coverage.paste(255, pos, tile.getchannel("A"))


def _composite(layer: Image.Image, tile: Image.Image, pos: tuple[int, int]) -> None:
    """Alpha-composite ``tile`` onto ``layer`` at ``pos``, clipped to the layer."""
    x, y = pos
    crop = (max(0, -x), max(0, -y), min(tile.width, layer.width - x), min(tile.height, layer.height - y))
    if crop[2] > crop[0] and crop[3] > crop[1]:
        layer.alpha_composite(tile.crop(crop), dest=(x + crop[0], y + crop[1]))


def _configured_path(font_path: str | os.PathLike[str] | None, use_settings: bool) -> tuple[str | None, str]:
    """An explicit path, else ``VP_FONT_PATH`` (when ``use_settings``), with where it came from."""
    if font_path is None and use_settings:
        from variant_pipeline.config import load_settings

        env_path = load_settings().font_path
        if env_path:
            return str(env_path), "env"
    return (str(font_path) if font_path is not None else None), "explicit"


def _pick_primary(text: str, rec: FontRecommendation | None) -> tuple[str, str, list[str], list[str]]:
    """(path, source, missing characters, notes on the candidates tried before it) of the outline
    font that draws most of the text: fewest missing letters and digits, then fewest missing
    characters, then the recommendation's order. The first font that has everything wins at once."""
    notes: list[str] = []
    best: tuple[tuple[int, int, int], str, str, list[str], int] | None = None
    for order, (path, src) in enumerate(font_candidates(rec)):
        try:
            if _font_kind(path, 0)[0] is not None:
                continue  # a bitmap (emoji) font is only ever a fallback
            missing = missing_glyphs(path, text)
        except Exception as exc:  # an unreadable font file is skipped, and said so
            notes.append(f"{path}: unreadable ({exc})")
            continue
        key = (sum(1 for ch in missing if _is_word_char(ch)), len(missing), order)
        if best is None or key < best[0]:
            best = (key, path, src, missing, len(notes))
        if not missing:
            break
        notes.append(f"{path}: missing {''.join(missing)}")
    if best is None:
        raise FontCoverageError(
            f"no Hangul-capable font found (searched {', '.join(FONT_DIRS)} and fc-list :lang=ko); "
            f"{INSTALL_HINT}"
        )
    _key, path, src, missing, n_before = best
    return path, src, missing, notes[:n_before]


def resolve_font_chain(
    text: str,
    rec: FontRecommendation | None = None,
    font_path: str | os.PathLike[str] | None = None,
    *,
    use_settings: bool = True,
    fallback: bool = True,
) -> FontChain:
    """The fonts to draw ``text`` with.

    The primary is ``font_path`` (else ``VP_FONT_PATH`` via the settings, when ``use_settings``),
    which must draw every letter and digit of the text itself; or else the installed font the
    recommendation maps onto that draws most of it. Characters the primary lacks (symbols, emoji,
    another script) come from the first other installed font that has them, colour fonts first
    for emoji. ``fallback=False`` asks for one font that draws everything. Raises
    ``FontCoverageError`` naming the characters (and code points) that no installed font has.
    """
    path, source = _configured_path(font_path, use_settings)
    if path is not None:
        if not Path(path).is_file():
            raise FontCoverageError(f"font file {path!r} ({source}) does not exist")
        missing = missing_glyphs(path, text)
        required = [ch for ch in missing if _is_word_char(ch)] if fallback else missing
        if required:
            raise FontCoverageError(
                f"font {path!r} ({'VP_FONT_PATH' if source == 'env' else source}) has no glyph for "
                f"{_describe(required)}; {INSTALL_HINT}"
            )
        primary = _choice(path, source, rec, ())
    else:
        path, source, missing, notes = _pick_primary(text, rec)
        if missing and not fallback:
            raise FontCoverageError(
                f"no installed font covers the text; the best candidate, {path}, still lacks "
                f"{_describe(missing)}; {INSTALL_HINT}"
            )
        primary = _choice(path, source, rec, notes)
    return _with_fallbacks(text, primary, set(missing), rec) if fallback else FontChain(primary)


def _with_fallbacks(text: str, primary: FontChoice, missing: set[str],
                    rec: FontRecommendation | None) -> FontChain:
    others = [p for p, _src in font_candidates(rec) if p != primary.path]
    wants_color = _wants_color(text)
    colored = [p for p in others if _font_kind(p, 0)[1]] if wants_color else []
    fonts: list[str] = [primary.path]
    assignment: dict[str, int] = {}
    uncovered: list[str] = []

    def covers(path: str, ch: str) -> bool:
        return ch not in missing if path == primary.path else _has_glyph(path, ch)

    for ch in _visible_chars(text):
        order = [*colored, primary.path, *others] if ch in wants_color else [primary.path, *others]
        found = next((p for p in order if covers(p, ch)), None)
        if found is None:
            uncovered.append(ch)
            continue
        if found not in fonts:
            fonts.append(found)
        assignment[ch] = fonts.index(found)
    if uncovered:
        raise FontCoverageError(f"no installed font has a glyph for {_describe(uncovered)}; {INSTALL_HINT}")
    chain = [primary, *(_choice(p, "fallback", rec, ()) for p in fonts[1:])]
    optional = {ch: tuple(i for i, f in enumerate(chain) if _has_glyph(f.path, ch))
                for ch in dict.fromkeys(text) if ch.isspace() or _is_invisible(ch)}
    return FontChain(primary=primary, fallbacks=tuple(chain[1:]), assignment=tuple(assignment.items()),
                     optional=tuple(optional.items()))


def resolve_font(
    text: str,
    rec: FontRecommendation | None = None,
    font_path: str | os.PathLike[str] | None = None,
    *,
    use_settings: bool = True,
) -> FontChoice:
    """One font that draws every character of ``text`` (see ``resolve_font_chain``).

    ``font_path`` (else ``VP_FONT_PATH`` via the settings, when ``use_settings``) is used as is
    and must cover the text. Otherwise the recommendation is mapped onto installed fonts and the
    first one with every glyph of the text wins.
    """
    return resolve_font_chain(text, rec, font_path, use_settings=use_settings, fallback=False).primary

