"""Text-model backends: one small chat interface (``work.text_model.TextModel``) over two backends.

``OpenAIChatBackend`` speaks the OpenAI-compatible chat-completions protocol over HTTP (OpenAI,
vLLM, llama.cpp server, Ollama's /v1, ...). ``LocalCausalLMBackend`` runs a transformers causal
LM in-process. The text stages in ``work/copywriting.py`` only see the ``TextModel`` protocol, so
switching from the tiny offline model to a hosted model is configuration
(``VP_TEXT_BACKEND=openai``, ``VP_OPENAI_BASE_URL``, ``VP_OPENAI_API_KEY``, ``VP_OPENAI_MODEL``).

No network is touched unless a base URL is configured: the default backend is local.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from variant_pipeline.models.registry import model_location
from variant_pipeline.work.text_model import ChatMessage, ChatRequest, Completion, TextModel

if TYPE_CHECKING:
    from variant_pipeline.config import Settings


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class TextModelError(RuntimeError):
    """Any failure of a text-model call; the message is meant for a job's failure reason."""


class TextModelConfigError(TextModelError, ValueError):
    """Backend missing, misnamed or incompletely configured."""


class TextModelHTTPError(TextModelError):
    def __init__(self, message: str, *, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class TextModelTimeout(TextModelError):
    pass


class TextModelResponseError(TextModelError):
    """The server answered 2xx but not with a usable chat completion."""

def _check_args(messages: Sequence[ChatMessage], temperature: float, max_tokens: int) -> None:
    if not messages:
        raise ValueError("a chat call needs at least one message")
    if not 0.0 <= temperature <= 2.0:
        raise ValueError(f"temperature must be in 0..2, got {temperature}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")


def _excerpt(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."

# --------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP backend
# --------------------------------------------------------------------------------------------

# Hosted services that always need a key; self-hosted servers (vLLM, llama.cpp, Ollama) often don't.
_HOSTS_NEEDING_KEY = (
    "api.openai.com", "openai.azure.com", "api.groq.com", "api.together.xyz", "api.mistral.ai",
    "api.deepseek.com", "openrouter.ai", "api.fireworks.ai",
)
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def _host_needs_key(host: str) -> bool:
    host = host.lower()
    return any(host == h or host.endswith("." + h) for h in _HOSTS_NEEDING_KEY)


class OpenAIChatBackend:
    """POST ``{base_url}/chat/completions`` with httpx.

    Retries 408/409/429/5xx and connection failures up to ``max_retries`` times with exponential
    backoff (honouring ``Retry-After`` up to ``max_backoff_s``). A read timeout is not retried:
    a server that is too slow once is usually too slow again, and retrying would multiply the
    configured timeout.
    """

    provider = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout_s: float = 60.0,
        *,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
    ) -> None:
        if not base_url:
            raise TextModelConfigError(
                "the openai text backend needs a base URL (VP_OPENAI_BASE_URL, e.g. https://api.openai.com/v1)")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TextModelConfigError(f"VP_OPENAI_BASE_URL must be an http(s) URL, got {base_url!r}")
        if not model:
            raise TextModelConfigError("the openai text backend needs a model name (VP_OPENAI_MODEL)")
        if not api_key and _host_needs_key(parts.hostname):
            raise TextModelConfigError(
                f"{parts.hostname} needs an API key: set VP_OPENAI_API_KEY")
        if timeout_s <= 0:
            raise TextModelConfigError(f"VP_OPENAI_TIMEOUT_S must be positive, got {timeout_s}")
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = float(timeout_s)
        self.max_retries = max(0, int(max_retries))
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # A loopback server is never reached through a proxy; elsewhere honour the environment.
        trust_env = parts.hostname not in _LOOPBACK_HOSTS
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(self.timeout_s),
                                    trust_env=trust_env)

    @property
    def name(self) -> str:
        return self.model

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIChatBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request_body(self, messages: Sequence[ChatMessage], *, temperature: float, max_tokens: int,
                     json_mode: bool = False, seed: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_dict() for m in messages],
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        if seed is not None:
            body["seed"] = seed  # best effort on OpenAI; honoured by vLLM
        return body

    def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float,
        max_tokens: int,
        json_mode: bool = False,
        seed: int | None = None,
    ) -> Completion:
        import httpx

        _check_args(messages, temperature, max_tokens)
        body = self.request_body(messages, temperature=temperature, max_tokens=max_tokens,
                                 json_mode=json_mode, seed=seed)
        url = f"{self.base_url}/chat/completions"
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._client.post(url, json=body)
            except httpx.TimeoutException as e:
                raise TextModelTimeout(
                    f"text model {self.model} at {url} did not answer within {self.timeout_s:g}s "
                    f"(attempt {attempt}; raise VP_OPENAI_TIMEOUT_S if the server is just slow)") from e
            except httpx.TransportError as e:
                if attempt <= self.max_retries:
                    time.sleep(self._delay(attempt, None))
                    continue
                raise TextModelError(
                    f"cannot reach text model server {url} after {attempt} attempts: {e}") from e
            if response.status_code in _RETRY_STATUSES and attempt <= self.max_retries:
                time.sleep(self._delay(attempt, response.headers.get("retry-after")))
                continue
            break
        latency_ms = (time.perf_counter() - started) * 1000.0
        if response.status_code >= 400:
            hint = ""
            if response.status_code in (401, 403):
                hint = " (check VP_OPENAI_API_KEY)"
            elif response.status_code == 404:
                hint = f" (check VP_OPENAI_BASE_URL and VP_OPENAI_MODEL={self.model!r})"
            raise TextModelHTTPError(
                f"text model server answered HTTP {response.status_code} for {url} after {attempt} "
                f"attempt(s){hint}: {_excerpt(response.text)}",
                status=response.status_code, body=response.text)
        return self._parse(response.text, latency_ms, attempt)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            with contextlib.suppress(ValueError):
                return min(self.max_backoff_s, max(0.0, float(retry_after)))
        return min(self.max_backoff_s, self.backoff_s * (2 ** (attempt - 1)))

    def _parse(self, text: str, latency_ms: float, attempts: int) -> Completion:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise TextModelResponseError(
                f"text model server sent a body that is not JSON: {_excerpt(text)}") from None
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise TextModelResponseError(
                f"text model answer has no choices[0].message: {_excerpt(text)}") from None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            refusal = message.get("refusal") if isinstance(message, dict) else None
            why = f"the model refused: {refusal}" if refusal else f"message content is {content!r}"
            raise TextModelResponseError(f"text model answer has no text ({why})")
        usage = data.get("usage") or {}

        def _int(v: Any) -> int | None:
            return int(v) if isinstance(v, int | float) else None

        raw = dict(data)
        raw["_attempts"] = attempts
        return Completion(
            text=content,
            model=str(data.get("model") or self.model),
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            latency_ms=latency_ms,
            raw=raw,
            finish_reason=choice.get("finish_reason"),
        )


# --------------------------------------------------------------------------------------------
# Local transformers backend
# --------------------------------------------------------------------------------------------


def _load_causal_lm(path: str, device: str, dtype: str, allow_network: bool | None) -> tuple[Any, Any, Any]:
    """(model, tokenizer, torch device) through the shared load-once-per-process model cache."""
    from variant_pipeline.models.causal_lm import load_causal_lm

    model, tokenizer = load_causal_lm(path, device, dtype, allow_network=allow_network)
    return model, tokenizer, next(model.parameters()).device


class LocalCausalLMBackend:
    """A transformers causal LM, loaded once per instance on first use (thread-safe).

    Sampling is reproducible: each call seeds a private RNG stream (``seed``, or the backend's
    ``default_seed`` when the caller gives none) without disturbing the process's global RNG.
    Calls are serialized because that seeding is process-wide inside ``generate``.
    JSON mode cannot be enforced locally; the stages' prompts ask for JSON and their parsers
    cope with whatever comes back.
    """

    provider = "local"

    def __init__(self, path: str | Path, device: str = "auto", dtype: str = "auto", *,
                 min_new_tokens: int = 4, default_seed: int = 0,
                 max_new_tokens_cap: int | None = None, allow_network: bool | None = None) -> None:
        self.path = str(path)
        self.allow_network = allow_network  # None: the VP_ALLOW_NETWORK setting decides
        # A ceiling over the callers' max_tokens: keeps CPU demos and tests of the tiny model quick.
        self.max_new_tokens_cap = max_new_tokens_cap
        self.device = device
        self.dtype = dtype
        self.min_new_tokens = max(0, int(min_new_tokens))
        self.default_seed = default_seed
        self._lock = threading.RLock()
        self._loaded: tuple[Any, Any, Any] | None = None

    @property
    def name(self) -> str:
        return self.path

    def load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._loaded is None:
                self._loaded = _load_causal_lm(self.path, self.device, self.dtype, self.allow_network)
            model, tokenizer, _ = self._loaded
            return model, tokenizer

    def _prompt_ids(self, tokenizer: Any, messages: Sequence[ChatMessage]) -> tuple[list[int], str]:
        dicts = [m.to_dict() for m in messages]
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(dicts, tokenize=False, add_generation_prompt=True)
            # The template already holds any BOS token; don't add a second one.
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            text = "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant:"
            ids = tokenizer(text)["input_ids"]
        return list(ids), text

    def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float,
        max_tokens: int,
        json_mode: bool = False,
        seed: int | None = None,
    ) -> Completion:
        import torch

        _check_args(messages, temperature, max_tokens)
        with self._lock:
            model, tokenizer = self.load()
            dev = self._loaded[2]  # type: ignore[index]
            started = time.perf_counter()
            ids, prompt_text = self._prompt_ids(tokenizer, messages)
            limit = getattr(model.config, "max_position_embeddings", None)
            max_new = max_tokens
            if self.max_new_tokens_cap:
                max_new = min(max_new, self.max_new_tokens_cap)
            if limit:
                if len(ids) >= limit:
                    raise TextModelError(
                        f"prompt has {len(ids)} tokens but text model {self.path} holds only {limit}")
                max_new = min(max_new, limit - len(ids))
            input_ids = torch.tensor([ids], dtype=torch.long, device=dev)
            eos = tokenizer.eos_token_id
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
            gen_kwargs: dict[str, Any] = {
                "max_new_tokens": max_new,
                "min_new_tokens": min(self.min_new_tokens, max_new),
                "pad_token_id": pad,
            }
            if temperature > 0:
                gen_kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
            else:
                gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            used_seed = self.default_seed if seed is None else seed
            fork_devices = ([dev.index if dev.index is not None else torch.cuda.current_device()]
                            if dev.type == "cuda" else [])
            with torch.random.fork_rng(devices=fork_devices), torch.inference_mode():
                torch.manual_seed(used_seed)
                out = model.generate(input_ids=input_ids,
                                     attention_mask=torch.ones_like(input_ids), **gen_kwargs)
            new_ids = out[0, input_ids.shape[1]:].tolist()
            latency_ms = (time.perf_counter() - started) * 1000.0
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
        finish = "stop" if (eos is not None and new_ids and new_ids[-1] == eos) else "length"
        if finish == "length" and len(new_ids) < max_new:
            finish = "stop"  # a stop token from generation_config other than eos
        return Completion(
            text=text,
            model=self.path,
            prompt_tokens=len(ids),
            completion_tokens=len(new_ids),
            latency_ms=latency_ms,
            raw={"backend": "local", "prompt_text": prompt_text, "output_ids": new_ids,
                 "seed": used_seed, "json_mode_enforced": False, "max_new_tokens": max_new},
            finish_reason=finish,
        )

    def complete_batch(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        # Sequential on purpose: each request keeps its own seed, so a batch gives the same
        # answers as the same calls made one by one.
        return [self.complete(r.messages, temperature=r.temperature, max_tokens=r.max_tokens,
                              json_mode=r.json_mode, seed=r.seed) for r in requests]


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------


def text_model_from_settings(settings: Settings) -> TextModel:
    """The configured backend; nothing is loaded or contacted until the first call."""
    backend = (settings.text_backend or "").strip().lower()
    if backend == "openai":
        if not settings.openai_base_url:
            raise TextModelConfigError(
                "VP_TEXT_BACKEND=openai needs VP_OPENAI_BASE_URL (e.g. https://api.openai.com/v1)")
        return OpenAIChatBackend(settings.openai_base_url, settings.openai_api_key,
                                 settings.openai_model, settings.openai_timeout_s)
    if backend == "local":
        location = model_location(settings, "text_model")
        if not location:
            raise TextModelConfigError("VP_TEXT_BACKEND=local needs VP_TEXT_MODEL (a directory or hub id)")
        return LocalCausalLMBackend(location, settings.device, settings.dtype,
                                    allow_network=settings.allow_network)
    raise TextModelConfigError(
        f"unknown text backend {settings.text_backend!r} (VP_TEXT_BACKEND): use 'local' or 'openai'")
