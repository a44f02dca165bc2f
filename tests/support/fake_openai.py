"""A local OpenAI-compatible server for tests: the real wire protocol, scripted answers.

It speaks `POST /v1/chat/completions` and `GET /v1/models` over real HTTP on 127.0.0.1, so the
client under test goes through the openai package, httpx, sockets and timeouts for real. Each
test scripts what comes back: a queue of `Reply`s (or functions of the request), and once the
queue is empty, an answer that fits the requested JSON schema (or a short text). Failures on
demand: a slow answer, 429 with Retry-After, 500s, malformed JSON, a label outside the enum.
Every request received is kept in `.requests` so tests can assert exactly what was sent.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = ["fake_llm"]


@dataclass
class ReceivedRequest:
    """One HTTP request as the server got it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, or None
    received_at: float  # time.monotonic()

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("messages", []))

    @property
    def schema(self) -> dict[str, Any] | None:
        fmt = (self.body or {}).get("response_format") or {}
        if fmt.get("type") == "json_schema":
            return dict(fmt["json_schema"]["schema"])
        return None

    def text(self) -> str:
        """Every message's content, joined (for "does the prompt contain ..." checks)."""
        return "\n".join(str(m.get("content", "")) for m in self.messages)


@dataclass
class Reply:
    """What the server answers to one chat completion request."""

    status: int = 200
    content: str | None = None  # the assistant message's text
    json: Any = None  # an object to send as the message's text (JSON-encoded)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (beyond a client's timeout: slow)
    usage: tuple[int, int] | None = None  # (prompt, completion); None = counted; see no_usage
    no_usage: bool = False  # leave `usage` out, like some local servers
    raw_body: bytes | None = None  # send these bytes as the HTTP body instead
    hang: bool = False  # never answer: hold the connection until the client gives up
    model: str | None = None  # the model the answer names; default: the one asked for
    finish_reason: str = "stop"
    error: str | None = None  # the error message of a non-200 answer


Script = Reply | Callable[[ReceivedRequest], Reply]


def count_tokens(text: str) -> int:
    """The fake's token count: one token per 4 characters, rounded up (deterministic)."""
    return math.ceil(len(text) / 4) if text else 0


def sample_for_schema(schema: dict[str, Any]) -> Any:
    """A value that fits a JSON schema (first enum value, in-range numbers, null where allowed)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = "null" if "null" in kind else kind[0]
    if kind == "object":
        props = schema.get("properties", {})
        required = schema.get("required", list(props))
        return {name: sample_for_schema(props[name]) for name in required}
    if kind == "array":
        return []
    if kind == "string":
        return "en" if schema.get("pattern") else "example"
    if kind in ("number", "integer"):
        low, high = schema.get("minimum", 0), schema.get("maximum", 1)
        value = (low + high) / 2
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    return None


def default_answer(request: ReceivedRequest) -> Reply:
    """With nothing scripted: an object fitting the requested schema, else a short text."""
    schema = request.schema
    if schema is not None:
        return Reply(json=sample_for_schema(schema))
    if ((request.body or {}).get("response_format") or {}).get("type") == "json_object":
        return Reply(json={})
    return Reply(content="Thank you for your message. A colleague will follow up shortly.")


class FakeOpenAI:
    """The server; use through the `fake_llm` fixture."""

    def __init__(self, models: tuple[str, ...] = ("fake-model",)) -> None:
        self.models = models
        self.requests: list[ReceivedRequest] = []
        # Answers delivered with status 200, per Idempotency-Key: what a provider bills.
        self.paid: Counter[str] = Counter()
        self.default: Callable[[ReceivedRequest], Reply] = default_answer
        self._queue: deque[Script] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        # A short poll interval so that stopping the server takes milliseconds, not 0.5 s.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,),
                                        daemon=True, name="fake-openai")

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def chat_requests(self) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def script(self, *replies: Script, **reply: Any) -> FakeOpenAI:
        """Queue answers: `Reply` objects, functions of the request, or one Reply's fields."""
        with self._lock:
            self._queue.extend(replies)
            if reply:
                self._queue.append(Reply(**reply))
        return self

    def pending(self) -> int:
        """Scripted answers not yet used."""
        return len(self._queue)

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # cut short any slow answer still waiting
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _next(self, request: ReceivedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            script = self._queue.popleft() if self._queue else self.default
        return script(request) if callable(script) else script

    def _completion(self, request: ReceivedRequest, reply: Reply) -> dict[str, Any]:
        content = reply.content if reply.content is not None else json.dumps(reply.json)
        body: dict[str, Any] = {
            "id": f"chatcmpl-fake{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or (request.body or {}).get("model", self.models[0]),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": reply.finish_reason,
                    "logprobs": None,
                }
            ],
        }
        if not reply.no_usage:
            prompt, completion = reply.usage or (count_tokens(request.text()),
                                                 count_tokens(content))
            body["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
        return body


def _make_handler(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            server.requests.append(self._received(None))
            if self.path.rstrip("/").endswith("/models"):
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                        for m in server.models]
                self._send(200, json.dumps({"object": "list", "data": data}).encode())
            else:
                self._send(404, b'{"error": {"message": "not found", "type": "invalid_request"}}')

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = None
            request = self._received(body)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                server.requests.append(request)
                self._send(404, b'{"error": {"message": "not found", "type": "invalid_request"}}')
                return
            reply = server._next(request)
            if reply.hang:
                self._wait_for_the_client_to_leave()
                return
            if reply.delay and server._stopping.wait(reply.delay):
                return
            if reply.raw_body is not None:
                payload = reply.raw_body
            elif reply.status != 200:
                payload = json.dumps({"error": {
                    "message": reply.error or f"fake error {reply.status}",
                    "type": "rate_limit_exceeded" if reply.status == 429 else "server_error",
                    "code": None, "param": None,
                }}).encode()
            else:
                payload = json.dumps(server._completion(request, reply)).encode()
            if self._send(reply.status, payload, reply.headers) and reply.status == 200:
                with server._lock:
                    server.paid[request.headers.get("idempotency-key", "")] += 1

        def _wait_for_the_client_to_leave(self) -> None:
            self.connection.settimeout(0.5)
            while not server._stopping.is_set():
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return  # closed by the client (its timeout)
                except TimeoutError:
                    continue
                except OSError:
                    return

        def _received(self, body: Any) -> ReceivedRequest:
            headers = {k.lower(): v for k, v in self.headers.items()}
            return ReceivedRequest(self.command, self.path, headers, body,
                                   time.monotonic())

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None
                  ) -> bool:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return False  # the client gave up (its timeout); nothing to tell it
            return True

    return Handler


@pytest.fixture()
def fake_llm() -> Iterator[FakeOpenAI]:
    """A running fake OpenAI-compatible server; breakers start closed for each test."""
    from mailbot.llm.breaker import reset_breakers

    reset_breakers()
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()
        reset_breakers()
