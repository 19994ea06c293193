"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol.

Used by the text-model tests and by orchestration tests that want the ``openai`` backend
without the internet::

    with openai_stub_server() as stub:
        stub.enqueue_content('{"instagram_ad_copy": "...", "hashtags": "#a #b"}')
        stub.enqueue_error(503)                  # the next call fails once, then ...
        backend = OpenAIChatBackend(stub.base_url, "test-key", "gpt-4o-mini", 5.0)
        ...
        stub.requests[0].body["temperature"]

Requests are validated the way the real API does (model, messages, temperature, max_tokens,
response_format, and JSON mode needing the word "json" in the messages); an invalid request
gets HTTP 400 with an OpenAI-style error body and is still recorded. With nothing scripted,
``responder`` answers (by default ``canned_responder``: plausible copy for each of the
project's text operations, recognized by their system prompts).
"""

from __future__ import annotations

import collections
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when it was not JSON
    valid: bool
    error: str | None


@dataclass
class ScriptedReply:
    status: int = 200
    content: str | None = None  # chat content for a 200 answer
    body: str | None = None  # a raw body instead (malformed answers, error bodies)
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0  # sleep before answering (timeout tests); cut short when the server stops
    usage: tuple[int, int] | None = None
    finish_reason: str = "stop"


Responder = Callable[[dict[str, Any]], str]


def canned_responder(body: dict[str, Any]) -> str:
    """Plausible answers for the project's text operations, keyed by their system prompts."""
    from variant_pipeline.work.copywriting import SYSTEM_PROMPTS

    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    operation = next((op for op, prompt in SYSTEM_PROMPTS.items() if prompt == system), None)
    answers = {
        "kor_to_eng": json.dumps({"translation_en": "Crispy fried chicken, freshly made with a secret "
                                                    "garlic soy glaze."}),
        "ad_copy_eng": "Golden, crunchy and glazed to perfection: tonight's chicken is calling.",
        "ad_copy_kor": "바삭한 갈릭 치킨",
        "eng_to_kor": "오늘 밤, 황금빛 바삭함이 당신을 부릅니다.",
        "feed_gen": json.dumps({
            "instagram_ad_copy": "겉은 바삭, 속은 촉촉! 비법 갈릭 간장 소스로 완성한 치킨을 만나보세요. "
                                 "오늘 저녁은 우리 가게에서 따끈하게 즐겨요 🍗",
            "hashtags": "#치킨 #맛집 #맛스타그램 #먹스타그램 #푸드스타그램 #갈릭치킨 #서울맛집",
        }, ensure_ascii=False),
    }
    if operation in answers:
        return answers[operation]
    if body.get("response_format", {}).get("type") == "json_object":
        return json.dumps({"answer": "stub"})
    return "stub answer"


def _validate(body: Any) -> str | None:
    """The reason a request would be rejected by the real API, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "'model' must be a non-empty string"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
            return f"messages[{i}].role is invalid"
        if not isinstance(m.get("content"), str):
            return f"messages[{i}].content must be a string"
    t = body.get("temperature", 1.0)
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 2:
        return "'temperature' must be a number in [0, 2]"
    mt = body.get("max_tokens")
    if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
        return "'max_tokens' must be a positive integer"
    rf = body.get("response_format")
    if rf is not None:
        if rf not in ({"type": "json_object"}, {"type": "text"}):
            return "'response_format' must be {'type': 'json_object'} or {'type': 'text'}"
        if rf == {"type": "json_object"} and not any("json" in m["content"].lower() for m in messages):
            return "'messages' must contain the word 'json' in some form to use 'response_format' json_object"
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        return "'seed' must be an integer"
    known = {"model", "messages", "temperature", "max_tokens", "response_format", "seed", "top_p",
             "n", "stop", "stream", "presence_penalty", "frequency_penalty", "user"}
    unknown = set(body) - known
    if unknown:
        return f"unrecognized request argument(s): {', '.join(sorted(unknown))}"
    return None


class OpenAIStubServer:
    def __init__(self, *, api_key: str | None = None, responder: Responder = canned_responder,
                 prefix: str = "/v1") -> None:
        self.api_key = api_key  # when set, requests without this bearer token get 401
        self.responder = responder
        self.prefix = prefix
        self.requests: list[RecordedRequest] = []
        self._script: collections.deque[ScriptedReply] = collections.deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- scripting -----------------------------------------------------------------------

    def enqueue(self, reply: ScriptedReply) -> None:
        with self._lock:
            self._script.append(reply)

    def enqueue_content(self, content: str, *, usage: tuple[int, int] | None = None,
                        finish_reason: str = "stop") -> None:
        self.enqueue(ScriptedReply(content=content, usage=usage, finish_reason=finish_reason))

    def enqueue_error(self, status: int, message: str = "stub error", *,
                      retry_after: float | None = None) -> None:
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        body = json.dumps({"error": {"message": message, "type": "server_error", "code": status}})
        self.enqueue(ScriptedReply(status=status, body=body, headers=headers))

    def enqueue_raw(self, body: str, status: int = 200) -> None:
        self.enqueue(ScriptedReply(status=status, body=body))

    def enqueue_hang(self, seconds: float, content: str = "late answer") -> None:
        self.enqueue(ScriptedReply(content=content, hang_s=seconds))

    @property
    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.body for r in self.requests]

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self) -> OpenAIStubServer:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                stub._handle(self)

            def do_GET(self) -> None:
                stub._send(self, 404, json.dumps({"error": {"message": "not found"}}))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-stub",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases handlers that are hanging
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> OpenAIStubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- request handling ----------------------------------------------------------------

    def _send(self, handler: BaseHTTPRequestHandler, status: int, body: str,
              headers: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8")
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                handler.send_header(k, v)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length).decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(raw)
        except json.JSONDecodeError:
            body = raw
        error = None
        status = 400
        if handler.path.rstrip("/") != f"{self.prefix}/chat/completions":
            error, status = f"no route for {handler.path}", 404
        elif self.api_key is not None and handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            error, status = "Incorrect API key provided", 401
        else:
            error = _validate(body)
        with self._lock:
            self.requests.append(RecordedRequest("POST", handler.path, dict(handler.headers.items()),
                                                 body, error is None, error))
            reply = self._script.popleft() if error is None and self._script else None
        if error is not None:
            self._send(handler, status, json.dumps(
                {"error": {"message": error, "type": "invalid_request_error", "code": None}}))
            return
        if reply is None:
            reply = ScriptedReply(content=self.responder(body))
        if reply.hang_s and self._stopping.wait(reply.hang_s):
            return
        if reply.body is not None:
            self._send(handler, reply.status, reply.body, reply.headers)
            return
        content = reply.content or ""
        prompt_tokens, completion_tokens = reply.usage or (
            sum(len(m["content"]) for m in body["messages"]) // 4 + 1, len(content) // 4 + 1)
        answer = {
            "id": f"chatcmpl-stub-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        self._send(handler, reply.status, json.dumps(answer, ensure_ascii=False), reply.headers)


@contextlib.contextmanager
def openai_stub_server(**kwargs: Any) -> Iterator[OpenAIStubServer]:
    """Start a stub on a free loopback port; always stopped on exit."""
    server = OpenAIStubServer(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
