"""fonts: a Hangul-capable font is found on this machine, and fonts without the glyphs are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.imaging import needs_emoji
from variant_pipeline.work import fonts
from variant_pipeline.work.fonts import FontCoverageError, missing_glyphs, resolve_font, resolve_font_chain
from variant_pipeline.work.types import FontRecommendation

KOREAN = "바삭한 치킨 한입"
DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
NANUM_DIR = Path("/usr/share/fonts/truetype/nanum")
needs_dejavu = pytest.mark.skipif(not Path(DEJAVU).is_file(), reason="DejaVu fonts not installed")
needs_nanum = pytest.mark.skipif(not NANUM_DIR.is_dir(), reason="fonts-nanum not installed")


@pytest.fixture(autouse=True)
def _no_env_font(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VP_FONT_PATH", raising=False)


def test_default_font_covers_korean_and_english() -> None:
    text = KOREAN + " Crispy chicken 20% OFF!"
    choice = resolve_font(text)
    assert missing_glyphs(choice.path, text) == []
    assert choice.family and Path(choice.path).is_file()


@needs_dejavu
def test_glyph_check_catches_hangul_in_dejavu() -> None:
    assert missing_glyphs(DEJAVU, "바삭한 chicken") == ["바", "삭", "한"]
    assert missing_glyphs(DEJAVU, "Crispy chicken") == []


@needs_dejavu
def test_glyph_check_without_fonttools_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fallback compares each rendered glyph with the font's .notdef glyph.
    monkeypatch.setattr(fonts, "_cmap", lambda path, index: None)
    assert missing_glyphs(DEJAVU, "바삭한 chicken") == ["바", "삭", "한"]
    if NANUM_DIR.is_dir():
        assert missing_glyphs(NANUM_DIR / "NanumGothic.ttf", KOREAN + " chicken") == []


@needs_dejavu
def test_explicit_font_without_hangul_is_an_error() -> None:
    with pytest.raises(FontCoverageError) as err:
        resolve_font(KOREAN, font_path=DEJAVU)
    msg = str(err.value)
    assert "U+BC14" in msg and "fonts-nanum" in msg


@needs_dejavu
def test_vp_font_path_is_used_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VP_FONT_PATH", DEJAVU)
    assert resolve_font("Crispy chicken").source == "env"
    with pytest.raises(FontCoverageError, match="VP_FONT_PATH"):
        resolve_font(KOREAN)


def test_missing_font_file_is_an_error() -> None:
    with pytest.raises(FontCoverageError, match="does not exist"):
        resolve_font(KOREAN, font_path="/nonexistent/font.ttf")


@needs_nanum
@pytest.mark.parametrize(
    ("rec", "expected_stem"),
    [
        (FontRecommendation(style="serif"), "NanumMyeongjo"),
        (FontRecommendation(style="bold"), "NanumGothicBold"),
        (FontRecommendation(style="sans-serif"), "NanumGothic"),
        (FontRecommendation(name="Nanum Gothic Bold"), "NanumGothicBold"),
        (FontRecommendation(name="Times New Roman"), "NanumMyeongjo"),  # a serif, with Hangul
        (FontRecommendation(name="Gmarket Sans", style="sans-serif"), "NanumGothic"),  # not installed
        (None, "NanumGothic"),
    ],
)
def test_recommendations_map_to_installed_hangul_fonts(
    rec: FontRecommendation | None, expected_stem: str
) -> None:
    choice = resolve_font(KOREAN, rec)
    assert Path(choice.path).stem == expected_stem
    assert missing_glyphs(choice.path, KOREAN) == []


@needs_nanum
def test_italic_never_picks_a_font_without_hangul() -> None:
    choice = resolve_font(KOREAN, FontRecommendation(style="italic"))
    assert "dejavu" not in choice.path.lower()
    assert missing_glyphs(choice.path, KOREAN) == []


def test_uncovered_character_names_it() -> None:
    with pytest.raises(FontCoverageError) as err:
        resolve_font("치킨 \U0001F357")  # one font for all: no Hangul font has the emoji
    assert "U+1F357" in str(err.value)
    with pytest.raises(FontCoverageError) as err:
        resolve_font_chain("치킨 \U00013000")  # an Egyptian hieroglyph: no installed font at all
    assert "U+13000" in str(err.value) and "no installed font has a glyph" in str(err.value)


@needs_nanum
@needs_emoji
def test_chain_draws_each_character_with_a_font_that_has_it() -> None:
    text = "오늘만 50% 할인 ☕🔥 Café Crème"
    chain = resolve_font_chain(text)
    assert Path(chain.primary.path).stem == "NanumGothic" and not chain.primary.color
    assert chain.needs_runs and [f.color for f in chain.fallbacks] == [True]
    assert chain.fallbacks[0].strike  # a bitmap font, scaled to the text size
    assert chain.runs(text) == [(0, "오늘만 50% 할인 "), (1, "☕🔥"), (0, " Café Crème")]
    for idx, run in chain.runs(text):
        assert missing_glyphs(chain.fonts[idx].path, run) == []
    # Joiners and selectors stay with their emoji (one family glyph, a red heart).
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"
    chain = resolve_font_chain(f"사랑해 ❤\ufe0f {family}")
    assert chain.runs(f"사랑해 ❤\ufe0f {family}") == [(0, "사랑해 "), (1, "❤\ufe0f"), (0, " "), (1, family)]
    # Text that one font draws needs no chain.
    assert not resolve_font_chain(KOREAN).needs_runs


@needs_dejavu
@needs_emoji
def test_a_configured_font_must_draw_the_words_itself_but_not_the_emoji() -> None:
    chain = resolve_font_chain("Crispy chicken 🔥", font_path=DEJAVU)
    assert chain.primary.path == DEJAVU and chain.fallbacks[0].color
    with pytest.raises(FontCoverageError, match="U\\+BC14"):
        resolve_font_chain(KOREAN + " 🔥", font_path=DEJAVU)


@needs_nanum
def test_chosen_font_draws_distinct_glyphs_not_tofu() -> None:
    # End-to-end: every Hangul syllable renders differently from the .notdef box.
    choice = resolve_font(KOREAN)
    font = choice.load(40)

    def render(s: str) -> bytes:
        img = Image.new("L", (60, 60), 0)
        ImageDraw.Draw(img).text((5, 5), s, font=font, fill=255)
        return img.tobytes()

    tofu = render("\uffff")
    assert all(render(ch) != tofu for ch in KOREAN.replace(" ", ""))
