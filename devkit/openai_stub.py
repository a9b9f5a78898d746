"""A local OpenAI-compatible chat-completions server, so the real langchain-openai client path
runs over HTTP in tests and benchmarks. Streams replies as SSE, records every request body,
and sets TCP_NODELAY (no Nagle/delayed-ACK artefacts in latency figures).

It is also the witness for G1 at the model: it counts the generations in flight per
conversation (keyed by the conversation's first user message, which every request of a session
repeats while the history fits the window) and records when each request arrived and when its
stream ended or the client closed the connection (noticed within one chunk interval, by
watching the socket between chunks).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devkit.redis_server import free_port


@dataclass
class Span:
    """One streamed request, in ``time.monotonic()`` seconds of this process."""

    conversation: str
    received: float
    ended: float | None = None
    closed_by_client: bool = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        stub = self.server.stub
        received = time.perf_counter()
        with stub.lock:
            stub.requests.append(body)
            stub.received_at.append(received)
            stub.received_at_monotonic.append(time.monotonic())
            n = len(stub.requests)
            limited = stub.rate_limit_next > 0
            if limited:
                stub.rate_limit_next -= 1
                stub.rate_limited.append(time.monotonic())
        if limited:
            self._rate_limited(stub.retry_after)
            return
        reply = stub.reply_for(body, n)
        size = max(1, -(-len(reply) // stub.chunks)) if stub.chunks else 8
        pieces = [reply[i : i + size] for i in range(0, len(reply), size)] or [""]
        if not body.get("stream"):
            payload = {
                "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            }  # fmt: skip
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            stub.finished_at.append(time.perf_counter())
            return
        span = stub.begin(conversation_of(body))
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, piece in enumerate(pieces):
                if stub.delay_s and self._client_closed(stub.delay_s / len(pieces)):
                    stub.end(span, closed_by_client=True)
                    return
                delta: dict[str, Any] = {"content": piece}
                if i == 0:
                    delta["role"] = "assistant"
                self._event(_chunk(n, body["model"], delta, None))
            self._event(_chunk(n, body["model"], {}, "stop"))
            prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4 + 1
            completion = len(reply) // 4 + 1
            stub.count_tokens(prompt + completion)
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
                self._event({**_chunk(n, body["model"], {}, None), "choices": [], "usage": usage})
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
            self.wfile.flush()
        except OSError:  # the client went away while we wrote
            stub.end(span, closed_by_client=True)
            return
        stub.end(span)
        stub.finished_at.append(time.perf_counter())

    def _rate_limited(self, retry_after: str | None) -> None:
        data = json.dumps(
            {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
        )
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())

    def _client_closed(self, wait_s: float) -> bool:
        """Wait ``wait_s``; True as soon as the client closes the connection."""
        readable, _, _ = select.select([self.connection], [], [], wait_s)
        if not readable:
            return False
        try:
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
        except OSError:
            return True

    def _event(self, obj: dict[str, Any]) -> None:
        self._chunk(f"data: {json.dumps(obj)}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def conversation_of(body: dict[str, Any]) -> str:
    return next((str(m["content"]) for m in body.get("messages", []) if m.get("role") == "user"), "")


def _chunk(n: int, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stub: OpenAIStub


class OpenAIStub:
    """``with OpenAIStub() as stub:`` then point ``OPENAI_BASE_URL`` at ``stub.base_url``.

    ``delay_s``: how long a streamed reply takes; ``chunks``: how many pieces it comes in
    (default: 8 characters a piece).
    """

    def __init__(self, delay_s: float = 0.0, chunks: int | None = None) -> None:
        self.delay_s = delay_s
        self.chunks = chunks
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        self.received_at_monotonic: list[float] = []
        self.finished_at: list[float] = []
        self.spans: list[Span] = []
        self._in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self.total_in_flight = 0
        self.max_total_in_flight = 0
        self.tokens: list[tuple[float, int]] = []  # (monotonic s, tokens) of each streamed reply
        # The next `rate_limit_next` requests get 429 (with Retry-After `retry_after` if set).
        self.rate_limit_next = 0
        self.retry_after: str | None = None
        self.rate_limited: list[float] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.stub = self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reply_for(self, body: dict[str, Any], n: int) -> str:
        last_user = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        return f"stub reply {n} to: {last_user}"

    def begin(self, conversation: str) -> Span:
        span = Span(conversation, time.monotonic())
        with self.lock:
            self.spans.append(span)
            level = self._in_flight.get(conversation, 0) + 1
            self._in_flight[conversation] = level
            self.max_in_flight[conversation] = max(level, self.max_in_flight.get(conversation, 0))
            self.total_in_flight += 1
            self.max_total_in_flight = max(self.max_total_in_flight, self.total_in_flight)
        return span

    def count_tokens(self, n: int) -> None:
        with self.lock:
            self.tokens.append((time.monotonic(), n))

    def end(self, span: Span, *, closed_by_client: bool = False) -> None:
        with self.lock:
            span.ended, span.closed_by_client = time.monotonic(), closed_by_client
            self._in_flight[span.conversation] -= 1
            self.total_in_flight -= 1

    def in_flight(self, conversation: str) -> int:
        with self.lock:
            return self._in_flight.get(conversation, 0)

    def __enter__(self) -> OpenAIStub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
