"""The text-model adapter: the HTTP backend against a real loopback server, the local backend on
the tiny causal LM, and the factory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.openai_stub_server import openai_stub_server
from variant_pipeline.config import load_settings
from variant_pipeline.models.text import (
    LocalCausalLMBackend,
    OpenAIChatBackend,
    TextModelConfigError,
    TextModelError,
    TextModelHTTPError,
    TextModelResponseError,
    TextModelTimeout,
    text_model_from_settings,
)
from variant_pipeline.work.text_model import ChatMessage, ChatRequest, Completion, TextModel, complete_batch

MESSAGES = [ChatMessage("system", "You write ad copy. Answer in JSON."),
            ChatMessage("user", "치킨 광고 문구를 써 주세요.")]


def _backend(stub, **kw) -> OpenAIChatBackend:
    kw.setdefault("backoff_s", 0.01)
    return OpenAIChatBackend(stub.base_url, "sk-test", "gpt-4o-mini", kw.pop("timeout_s", 5.0), **kw)


# --- HTTP backend ------------------------------------------------------------------------------


def test_http_request_shape_and_parsing() -> None:
    with openai_stub_server(api_key="sk-test") as stub, _backend(stub) as backend:
        stub.enqueue_content('{"a": "바삭"}', usage=(42, 7))
        c = backend.complete(MESSAGES, temperature=0.7, max_tokens=1000, json_mode=True, seed=50)
        assert isinstance(backend, TextModel)
        assert c.text == '{"a": "바삭"}'
        assert (c.prompt_tokens, c.completion_tokens, c.total_tokens) == (42, 7, 49)
        assert c.model == "gpt-4o-mini" and c.finish_reason == "stop" and c.latency_ms > 0
        assert c.raw["choices"][0]["message"]["content"] == c.text
        (req,) = stub.requests
        assert req.valid and req.path == "/v1/chat/completions"
        assert req.headers["Authorization"] == "Bearer sk-test"
        assert req.body == {
            "model": "gpt-4o-mini",
            "messages": [m.to_dict() for m in MESSAGES],
            "temperature": 0.7,
            "max_tokens": 1000,
            "response_format": {"type": "json_object"},
            "seed": 50,
        }
        # Plain mode sends neither response_format nor seed.
        backend.complete(MESSAGES, temperature=0.3, max_tokens=20)
        assert "response_format" not in stub.requests[1].body and "seed" not in stub.requests[1].body


def test_http_retries_5xx_and_429_then_succeeds() -> None:
    with openai_stub_server() as stub, _backend(stub, max_retries=3) as backend:
        stub.enqueue_error(500)
        stub.enqueue_error(429, "rate limited", retry_after=0)
        stub.enqueue_error(503)
        stub.enqueue_content("좋아요")
        c = backend.complete(MESSAGES, temperature=0.3, max_tokens=10)
        assert c.text == "좋아요" and c.raw["_attempts"] == 4
        assert len(stub.requests) == 4
        assert all(r.body == stub.requests[0].body for r in stub.requests)


def test_http_retries_are_bounded_and_error_names_status_and_body() -> None:
    with openai_stub_server() as stub, _backend(stub, max_retries=2) as backend:
        for _ in range(3):
            stub.enqueue_error(502, "upstream exploded")
        with pytest.raises(TextModelHTTPError) as e:
            backend.complete(MESSAGES, temperature=0.3, max_tokens=10)
        assert e.value.status == 502
        assert "HTTP 502" in str(e.value) and "upstream exploded" in str(e.value)
        assert "3 attempt" in str(e.value)
        assert len(stub.requests) == 3


def test_http_client_errors_are_not_retried() -> None:
    with openai_stub_server(api_key="right") as stub:
        with OpenAIChatBackend(stub.base_url, "wrong", "m", 5.0, backoff_s=0.01) as backend, \
                pytest.raises(TextModelHTTPError, match=r"HTTP 401.*VP_OPENAI_API_KEY") as e:
            backend.complete(MESSAGES, temperature=0.3, max_tokens=10)
        assert e.value.status == 401 and len(stub.requests) == 1
        # The stub enforces the real API's rule that JSON mode needs "json" in the messages.
        with OpenAIChatBackend(stub.base_url, "right", "m", 5.0) as backend, \
                pytest.raises(TextModelHTTPError, match=r"HTTP 400.*json"):
            backend.complete([ChatMessage("user", "hello")], temperature=0.3, max_tokens=5, json_mode=True)


def test_http_timeout_is_clear() -> None:
    with openai_stub_server() as stub, _backend(stub, timeout_s=0.3) as backend:
        stub.enqueue_hang(30)
        with pytest.raises(TextModelTimeout, match=r"did not answer within 0.3s"):
            backend.complete(MESSAGES, temperature=0.3, max_tokens=10)
        assert len(stub.requests) == 1  # a read timeout is not retried


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("<html>gateway</html>", "not JSON"),
        (json.dumps({"choices": []}), r"no choices\[0\].message"),
        (json.dumps({"object": "chat.completion"}), r"no choices\[0\].message"),
        (json.dumps({"choices": [{"message": {"role": "assistant", "content": None,
                                              "refusal": "I can't help"}}]}), "refused"),
    ],
)
def test_http_malformed_answers(body: str, match: str) -> None:
    with openai_stub_server() as stub, _backend(stub) as backend:
        stub.enqueue_raw(body)
        with pytest.raises(TextModelResponseError, match=match):
            backend.complete(MESSAGES, temperature=0.3, max_tokens=10)


def test_http_unreachable_server_is_clear() -> None:
    with openai_stub_server() as stub:
        url = stub.base_url
    with OpenAIChatBackend(url, None, "m", 2.0, max_retries=1, backoff_s=0.01) as backend, \
            pytest.raises(TextModelError, match="cannot reach text model server"):
        backend.complete(MESSAGES, temperature=0.3, max_tokens=10)


def test_http_config_errors() -> None:
    with pytest.raises(TextModelConfigError, match="VP_OPENAI_API_KEY"):
        OpenAIChatBackend("https://api.openai.com/v1", None, "gpt-4o-mini")
    with pytest.raises(TextModelConfigError, match="base URL"):
        OpenAIChatBackend("", "k", "gpt-4o-mini")
    with pytest.raises(TextModelConfigError, match="http"):
        OpenAIChatBackend("ftp://example.org", "k", "gpt-4o-mini")
    # A self-hosted server may run without a key.
    OpenAIChatBackend("http://127.0.0.1:9/v1", None, "local-model").close()


def test_batch_and_stub_default_responder() -> None:
    with openai_stub_server() as stub, _backend(stub) as backend:
        reqs = [ChatRequest(tuple(MESSAGES), 0.3, 10), ChatRequest(tuple(MESSAGES), 0.7, 10, json_mode=True)]
        out = complete_batch(backend, reqs)
        assert [type(c) for c in out] == [Completion, Completion]
        assert json.loads(out[1].text)  # the default responder answers JSON in JSON mode
        assert [r.body["temperature"] for r in stub.requests] == [0.3, 0.7]


# --- factory -----------------------------------------------------------------------------------


def test_factory(tmp_path: Path) -> None:
    base = load_settings()
    local = text_model_from_settings(base.model_copy(update={
        "text_backend": "local", "environ": {**base.environ, "VP_TEXT_MODEL": str(tmp_path)}}))
    assert isinstance(local, LocalCausalLMBackend) and local.name == str(tmp_path)
    with openai_stub_server() as stub:
        remote = text_model_from_settings(base.model_copy(update={
            "text_backend": "openai", "openai_base_url": stub.base_url, "openai_api_key": None,
            "openai_model": "m1", "openai_timeout_s": 5.0}))
        assert isinstance(remote, OpenAIChatBackend)
        assert remote.complete(MESSAGES, temperature=0.3, max_tokens=5).model == "m1"
        remote.close()
    with pytest.raises(TextModelConfigError, match="VP_OPENAI_BASE_URL"):
        text_model_from_settings(base.model_copy(update={"text_backend": "openai", "openai_base_url": None}))
    with pytest.raises(TextModelConfigError, match="unknown text backend 'gpt'"):
        text_model_from_settings(base.model_copy(update={"text_backend": "gpt"}))


def test_local_missing_model_is_clear(tmp_path: Path) -> None:
    backend = LocalCausalLMBackend(tmp_path / "nope", "cpu", "float32")
    with pytest.raises(Exception, match=r"text \(causal LM\) model not found at .*nope"):
        backend.complete(MESSAGES, temperature=0.3, max_tokens=5)


# --- local backend on the tiny causal LM -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> LocalCausalLMBackend:
    from variant_pipeline.models.tiny import build_tiny_causal_lm

    path = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "causal-lm")
    return LocalCausalLMBackend(path, "cpu", "float32", min_new_tokens=8, max_new_tokens_cap=24)


def test_local_backend_is_reproducible_with_a_seed(tiny_lm: LocalCausalLMBackend) -> None:
    import torch

    assert isinstance(tiny_lm, TextModel)
    before = torch.random.get_rng_state()
    a = tiny_lm.complete(MESSAGES, temperature=0.7, max_tokens=16, seed=7)
    b = tiny_lm.complete(MESSAGES, temperature=0.7, max_tokens=16, seed=7)
    assert torch.equal(before, torch.random.get_rng_state())  # the global RNG is left alone
    assert a.text and a.text == b.text and a.raw["output_ids"] == b.raw["output_ids"]
    assert 8 <= a.completion_tokens <= 16 and a.prompt_tokens > 0
    assert a.raw["prompt_text"].endswith("<|assistant|>\n")  # the tokenizer's chat template was applied
    others = {tuple(tiny_lm.complete(MESSAGES, temperature=0.7, max_tokens=16, seed=s).raw["output_ids"])
              for s in (1, 2, 3)}
    assert len(others | {tuple(a.raw["output_ids"])}) > 1  # seeds matter
    # Greedy decoding ignores the seed.
    g1 = tiny_lm.complete(MESSAGES, temperature=0.0, max_tokens=12, seed=1)
    g2 = tiny_lm.complete(MESSAGES, temperature=0.0, max_tokens=12, seed=2)
    assert g1.raw["output_ids"] == g2.raw["output_ids"]
    # The cap bounds the callers' max_tokens; min_new_tokens makes the model say something.
    long = tiny_lm.complete(MESSAGES, temperature=0.7, max_tokens=1000, seed=3)
    assert 8 <= long.completion_tokens <= 24 and long.raw["max_new_tokens"] == 24


def test_local_backend_batch_matches_single_calls(tiny_lm: LocalCausalLMBackend) -> None:
    reqs = [ChatRequest(tuple(MESSAGES), 0.7, 10, seed=s) for s in (11, 12)]
    batch = complete_batch(tiny_lm, reqs)
    single = [tiny_lm.complete(MESSAGES, temperature=0.7, max_tokens=10, seed=s) for s in (11, 12)]
    assert [c.text for c in batch] == [c.text for c in single]


def test_local_backend_loads_once_across_threads(tiny_lm: LocalCausalLMBackend) -> None:
    from concurrent.futures import ThreadPoolExecutor

    fresh = LocalCausalLMBackend(tiny_lm.path, "cpu", "float32", max_new_tokens_cap=6)
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(lambda _: fresh.load(), range(4)))
    assert all(m is loaded[0][0] for m, _ in loaded)
    with ThreadPoolExecutor(3) as pool:
        texts = list(pool.map(
            lambda _: fresh.complete(MESSAGES, temperature=0.7, max_tokens=6, seed=5).text, range(3)))
    assert len(set(texts)) == 1
