"""Text stages: parsers on realistic and garbage answers, the stages over the real HTTP protocol
(loopback stub) and end to end on the tiny random causal LM."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.openai_stub_server import OpenAIStubServer, openai_stub_server
from variant_pipeline.models.text import LocalCausalLMBackend, OpenAIChatBackend
from variant_pipeline.work import copywriting as cw
from variant_pipeline.work.copywriting import (
    FeedInputs,
    TextStageError,
    ad_copy_gen_kor,
    clean_model_text,
    fallback_hashtags,
    fit_short_korean,
    format_store_information,
    instagram_feed_gen,
    normalize_hashtags,
    parse_feed_answer,
    translate_description_to_english,
    write_english_ad_copy,
    write_short_korean_ad_copy,
)

DESC_KOR = "부대찌개 맛집! 햄과 소시지, 김치가 듬뿍 들어간 얼큰한 부대찌개입니다."
STORE = format_store_information("강남 부대찌개", "서울 강남구 역삼동의 30년 된 노포", "한식")
FEED_IN = FeedInputs(ad_copy_eng="A bubbling pot of comfort, loaded with ham and kimchi.",
                     product_description=DESC_KOR, ad_copy_kor="얼큰한 부대찌개",
                     tone_style="친근한", store_information=STORE)

FEED_JSON = json.dumps({
    "instagram_ad_copy": "추운 날엔 역시 얼큰한 부대찌개죠 🔥 햄, 소시지, 김치가 듬뿍!\n오늘 저녁 역삼동에서 만나요.",
    "hashtags": "#부대찌개 #맛집 #맛스타그램 #먹스타그램 #푸드스타그램 #강남맛집 #역삼맛집",
}, ensure_ascii=False)


@pytest.fixture()
def stub() -> Iterator[OpenAIStubServer]:
    with openai_stub_server() as server:
        yield server


@pytest.fixture()
def gpt(stub: OpenAIStubServer) -> Iterator[OpenAIChatBackend]:
    with OpenAIChatBackend(stub.base_url, "sk-test", "gpt-4o-mini", 5.0, backoff_s=0.01) as backend:
        yield backend


# --- parsers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        FEED_JSON,
        f"```json\n{FEED_JSON}\n```",
        f"물론이죠! 요청하신 피드입니다:\n\n{FEED_JSON}\n\n마음에 드시길 바랍니다.",
        FEED_JSON.replace('"', "'"),  # Python-style quotes (no quote inside the texts)
        FEED_JSON[:-1] + ",\n}",  # trailing comma
        FEED_JSON.replace('"instagram_ad_copy"', '"instagram\\_ad\\_copy"'),  # escaped underscores
    ],
)
def test_feed_parser_realistic_answers(answer: str) -> None:
    feed = parse_feed_answer(answer, product_description=DESC_KOR, store_information=STORE)
    assert feed.parsed_json and feed.parse_error is None
    assert feed.instagram_ad_copy.startswith("추운 날엔 역시 얼큰한 부대찌개죠")
    assert "\n" in feed.instagram_ad_copy
    assert feed.hashtags == ["#부대찌개", "#맛집", "#맛스타그램", "#먹스타그램", "#푸드스타그램",
                             "#강남맛집", "#역삼맛집"]
    assert feed.hashtags_source == "model"


def test_feed_parser_variants() -> None:
    # Hashtags as a JSON list, some without '#', duplicates, too many, punctuation glued on.
    answer = json.dumps({"caption": "오늘의 메뉴! #부대찌개", "tags": [
        "맛집", "#맛집", "#부대찌개,", "#먹스타그램!", "#a", "#b", "#c", "#d", "#e", "#f", "#g", "#h"]},
        ensure_ascii=False)
    feed = parse_feed_answer(answer)
    assert feed.parsed_json and feed.instagram_ad_copy == "오늘의 메뉴!"
    assert feed.hashtags[:4] == ["#맛집", "#부대찌개", "#먹스타그램", "#a"] and len(feed.hashtags) == 10
    assert "hashtags_moved_from_copy" in feed.issues
    # Truncated at max_tokens, after the copy field.
    cut = '{"instagram_ad_copy": "바삭한 치킨 먹으러 오세요!", "hashtags": "#치킨 #맛집 #치맥'
    feed = parse_feed_answer(cut)
    assert feed.instagram_ad_copy == "바삭한 치킨 먹으러 오세요!" and feed.hashtags == ["#치킨", "#맛집", "#치맥"]
    # Prose with hashtags on the last line: no JSON, copy and tags still separated.
    feed = parse_feed_answer("오늘도 따끈한 한 그릇 어떠세요?\n\n#부대찌개 #맛집 #맛집", product_description=DESC_KOR)
    assert not feed.parsed_json and feed.parse_error == "no JSON object in the answer"
    assert feed.instagram_ad_copy == "오늘도 따끈한 한 그릇 어떠세요?"
    assert feed.hashtags == ["#부대찌개", "#맛집"] and feed.hashtags_source == "model"
    # A JSON object without the copy field falls back to the text, and says so.
    feed = parse_feed_answer('{"hashtags": "#맛집"} 그리고 본문은 이것입니다')
    assert not feed.parsed_json and "no instagram_ad_copy" in (feed.parse_error or "")


def test_feed_parser_fallback_hashtags() -> None:
    feed = parse_feed_answer('{"instagram_ad_copy": "맛있게 드세요!", "hashtags": ""}',
                             product_description=DESC_KOR, store_information=STORE)
    assert feed.hashtags_source == "fallback"
    assert feed.hashtags == ["#부대찌개", "#맛집", "#맛스타그램", "#먹스타그램", "#푸드스타그램",
                             "#한국음식", "#데일리", "#서울맛집", "#강남맛집"]
    assert fallback_hashtags("김밥", "부산 해운대") == ["#맛스타그램", "#먹스타그램", "#푸드스타그램", "#한국음식", "#데일리"]
    assert fallback_hashtags("맛있는 김밥")[0] == "#맛집"


def test_feed_parser_garbage() -> None:
    junk = "\ufffd\ufffd L\ufffdcrib\ufffdans\x18\ufffd맛\x05\ufffd타그램 co\ufffd\ufffdP;\ufffd{contrast\x02"
    feed = parse_feed_answer(junk, product_description=DESC_KOR)
    assert not feed.parsed_json and feed.parse_error
    assert "\ufffd" not in feed.instagram_ad_copy and "\x18" not in feed.instagram_ad_copy
    assert any(i.startswith("junk_removed:") for i in feed.issues)
    assert feed.hashtags_source == "fallback"
    for unusable in ["", "   \n ", "\ufffd\ufffd\x00\x07", "{}", "...!!! ???", "#맛집 #먹스타그램",
                     '{"instagram_ad_copy": "  ", "hashtags": "#a"}']:
        with pytest.raises(TextStageError, match="feed_gen: .*no readable post text"):
            parse_feed_answer(unusable)


def test_hashtag_normalizer() -> None:
    assert normalize_hashtags("#맛집 #맛집, #먹스타그램!! 맛집 #a#b ＃전각 # #!!") == [
        "#맛집", "#먹스타그램", "#a", "#b", "#전각"]
    assert normalize_hashtags(["맛집", "#맛집", "two words", 3]) == ["#맛집", "#3"]
    assert normalize_hashtags(" ".join(f"#t{i}" for i in range(20))) == [f"#t{i}" for i in range(10)]
    assert normalize_hashtags(None) == []


def test_cleaning_and_short_copy_fitting() -> None:
    c = clean_model_text("  바삭\ufffd한\u200b 치킨\x07 \r\n\n\n\n끝  ")
    assert c.text == "바삭한 치킨\n\n끝" and c.removed == 3
    assert fit_short_korean("바삭한 치킨") == ("바삭한 치킨", False)
    assert fit_short_korean("바삭바삭한 황금빛 치킨 한 마리") == ("바삭바삭한 황금빛 치킨", True)
    assert fit_short_korean("초특급울트라바삭바삭치킨") == ("초특급울트라바삭바삭", True)
    assert fit_short_korean("1+1 이벤트 치킨!") == ("1+1 이벤트 치킨!", False)  # 9 letters/digits


# --- stages over HTTP ---------------------------------------------------------------------------


def test_upstream_steps_over_http(stub: OpenAIStubServer, gpt: OpenAIChatBackend) -> None:
    stub.enqueue_content('{"translation_en": "A spicy army stew loaded with ham, sausage and kimchi."}')
    desc = translate_description_to_english(gpt, DESC_KOR, seed=50)
    assert desc.text == "A spicy army stew loaded with ham, sausage and kimchi." and desc.parsed_json
    body = stub.requests[-1].body
    assert body["temperature"] == 0.3 and body["response_format"] == {"type": "json_object"}
    assert body["messages"][1] == {"role": "user", "content": DESC_KOR} and body["seed"] == 50

    stub.enqueue_content('"Comfort in a pot: bubbling, spicy, shared." #stew')
    eng = write_english_ad_copy(gpt, desc.text)
    assert eng.text == "Comfort in a pot: bubbling, spicy, shared."
    assert desc.text in stub.requests[-1].body["messages"][1]["content"]

    stub.enqueue_content("광고 문구: 「얼큰한 부대찌개 한 냄비 가득」 🔥\n(10자 이내로 작성했습니다)")
    short = write_short_korean_ad_copy(gpt, DESC_KOR, eng.text)
    assert short.text == "얼큰한 부대찌개 한 냄비" and short.trimmed
    assert short.model_text == "얼큰한 부대찌개 한 냄비 가득"
    assert set(short.issues) >= {"trimmed_to_10_chars", "extra_lines_dropped"}
    msgs = stub.requests[-1].body["messages"]
    assert DESC_KOR in msgs[1]["content"] and eng.text in msgs[1]["content"]
    assert short.trace()["response"]["ad_copy_kor"] == short.text


def test_ad_copy_gen_kor_over_http(stub: OpenAIStubServer, gpt: OpenAIChatBackend) -> None:
    stub.enqueue_content("보글보글 끓는 위로 한 냄비, 햄과 김치가 가득!", usage=(120, 30))
    out = ad_copy_gen_kor(gpt, FEED_IN.ad_copy_eng)
    assert out.ad_copy_kor == "보글보글 끓는 위로 한 냄비, 햄과 김치가 가득!" and out.issues == ()
    body = stub.requests[-1].body
    assert body["temperature"] == 0.3 and body["max_tokens"] == 1000 and "response_format" not in body
    assert body["messages"][0]["role"] == "system" and FEED_IN.ad_copy_eng in body["messages"][1]["content"]
    trace = out.trace()
    assert trace["operation_type"] == "eng_to_kor" and trace["provider"] == "openai"
    assert trace["request"]["ad_copy_eng"] == FEED_IN.ad_copy_eng
    assert trace["response"]["ad_copy_kor"] == out.ad_copy_kor
    assert (trace["prompt_tokens"], trace["completion_tokens"], trace["total_tokens"]) == (120, 30, 150)
    json.dumps(trace)  # JSON-able for llm_traces
    # An English-only answer is kept but flagged.
    stub.enqueue_content("Sorry, here it is: comfort in a pot.")
    assert "no_hangul" in ad_copy_gen_kor(gpt, "x").issues


def test_instagram_feed_gen_over_http(stub: OpenAIStubServer, gpt: OpenAIChatBackend) -> None:
    stub.enqueue_content(f"```json\n{FEED_JSON}\n```")
    feed = instagram_feed_gen(gpt, FEED_IN, seed=100)
    assert feed.parsed_json and feed.hashtags_source == "model"
    assert feed.hashtags_text == "#부대찌개 #맛집 #맛스타그램 #먹스타그램 #푸드스타그램 #강남맛집 #역삼맛집"
    body = stub.requests[-1].body
    assert body["temperature"] == 0.7 and body["max_tokens"] == 1000
    assert body["response_format"] == {"type": "json_object"} and body["seed"] == 100
    user = body["messages"][1]["content"]
    for part in (FEED_IN.ad_copy_eng, FEED_IN.ad_copy_kor, DESC_KOR, STORE, "친근한", cw.DEFAULT_FEED_INSTRUCTION):
        assert part in user  # the Korean copy reaches the model too
    trace = feed.trace()
    assert trace["request"]["refined_ad_copy_eng"] == FEED_IN.ad_copy_eng
    assert trace["request"]["gpt_prompt"] == cw.DEFAULT_FEED_INSTRUCTION
    assert trace["response"]["hashtags"] == feed.hashtags_text


def test_stub_default_responder_serves_every_stage(stub: OpenAIStubServer, gpt: OpenAIChatBackend) -> None:
    """With nothing scripted the stub answers in kind (what orchestration tests rely on)."""
    desc = translate_description_to_english(gpt, DESC_KOR)
    eng = write_english_ad_copy(gpt, desc.text)
    short = write_short_korean_ad_copy(gpt, DESC_KOR, eng.text)
    kor = ad_copy_gen_kor(gpt, eng.text)
    feed = instagram_feed_gen(gpt, FeedInputs(eng.text, DESC_KOR, short.text))
    assert desc.parsed_json and feed.parsed_json and not short.trimmed
    assert all(not r.issues for r in (desc, eng, short, kor)) and feed.hashtags_source == "model"
    assert all(r.valid for r in stub.requests)


def test_missing_inputs_and_unusable_answers_fail_clearly(stub: OpenAIStubServer, gpt: OpenAIChatBackend) -> None:
    with pytest.raises(TextStageError, match="eng_to_kor: missing input: ad_copy_eng is empty"):
        ad_copy_gen_kor(gpt, "  ")
    with pytest.raises(TextStageError, match="feed_gen: missing input: ad_copy_eng"):
        instagram_feed_gen(gpt, FeedInputs("", DESC_KOR))
    assert stub.requests == []  # no call made for missing input
    stub.enqueue_content("\ufffd\ufffd\x03 \ufffd")
    with pytest.raises(TextStageError, match="eng_to_kor: the model's answer has no readable"):
        ad_copy_gen_kor(gpt, "Hello")
    stub.enqueue_content("🔥🔥 #치킨")
    with pytest.raises(TextStageError, match="ad_copy_kor: .*no readable Korean line"):
        write_short_korean_ad_copy(gpt, DESC_KOR, "Hello")
    stub.enqueue_content("")
    with pytest.raises(TextStageError, match="kor_to_eng"):
        translate_description_to_english(gpt, DESC_KOR)


# --- end to end on the tiny random causal LM ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> LocalCausalLMBackend:
    from variant_pipeline.models.tiny import build_tiny_causal_lm

    path = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "causal-lm")
    return LocalCausalLMBackend(path, "cpu", "float32", min_new_tokens=8, max_new_tokens_cap=40)


def test_stages_on_tiny_random_model(tiny_lm: LocalCausalLMBackend) -> None:
    desc = translate_description_to_english(tiny_lm, DESC_KOR, seed=1)
    assert not desc.parsed_json and any(i.startswith("json_unparsed") for i in desc.issues)
    eng = write_english_ad_copy(tiny_lm, desc.text, seed=2)
    short = write_short_korean_ad_copy(tiny_lm, DESC_KOR, eng.text, seed=3)
    assert cw.count_visible_chars(short.text) <= cw.MAX_SHORT_KOREAN_CHARS
    kor = ad_copy_gen_kor(tiny_lm, eng.text, seed=4)
    feed = instagram_feed_gen(tiny_lm, FeedInputs(eng.text, DESC_KOR, short.text, "친근한", STORE), seed=5)
    assert not feed.parsed_json and feed.parse_error
    assert feed.hashtags and all(t.startswith("#") for t in feed.hashtags) and len(feed.hashtags) <= 10
    for r in (desc, eng, short, kor, feed):
        text = getattr(r, "text", None) or getattr(r, "ad_copy_kor", None) or r.instagram_ad_copy
        assert text and "\ufffd" not in text
        assert r.call.provider == "local" and r.call.completion_tokens
        json.dumps(r.trace())
    # Same seeds, same answers (the original sampled unseeded).
    again = instagram_feed_gen(tiny_lm, FeedInputs(eng.text, DESC_KOR, short.text, "친근한", STORE), seed=5)
    assert again.instagram_ad_copy == feed.instagram_ad_copy and again.hashtags == feed.hashtags
