"""A local OpenAI-compatible chat-completions server, so the real langchain-openai client path
runs over HTTP in tests and benchmarks. Streams replies as SSE, records every request body,
and sets TCP_NODELAY (no Nagle/delayed-ACK artefacts in latency figures).

Like the real API it calls tools and enforces the message-order rules of tool calls
(devkit/openai_rules.py): a user message with ``!tool=NAME:{json}`` gets an assistant message that
calls those tools (streamed as tool-call deltas); a request that ends with tool results gets an
answer that quotes them; a request that breaks the rules gets HTTP 400, and is kept in
``rejected``. ``!empty`` in the user message gets an empty reply. With
``stream_options.include_usage`` the stream ends with a usage chunk.

It is also the witness for G1 at the model: it counts the generations in flight per
conversation (keyed by the conversation's first user message, which every request of a session
repeats while the history fits the window) and records when each request arrived and when its
stream ended or the client closed the connection (noticed within one chunk interval, by
watching the socket between chunks). When a conversation's next request arrives, its open
requests are checked first: one whose client has closed the connection ends then, before the new
one is recorded. Each handler is a thread, and the one that watches a closing connection can wait
for the GIL while the next request is read: without that check a close that reached this machine
first was once recorded 0.8 ms after the next request (a CI failure of the G1 test at the model).
For the same reason a finished stream ends just before its last bytes are sent.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devkit.openai_rules import order_violation, tool_call_deltas, tool_calls_message, tool_directives, tool_results
from devkit.redis_server import free_port


@dataclass
class Span:
    """One streamed request, in ``time.monotonic()`` seconds of this process."""

    conversation: str
    received: float
    ended: float | None = None
    closed_by_client: bool = False
    connection: socket.socket | None = field(default=None, repr=False, compare=False)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.loads(raw or b"{}")
        stub = self.server.stub
        received = time.perf_counter()
        with stub.lock:
            stub.requests.append(body)
            stub.raw_requests.append(raw)
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
        violation = order_violation(body.get("messages", []))
        if violation is not None:
            with stub.lock:
                stub.rejected.append((violation, body))
            error = {
                "error": {"message": violation, "type": "invalid_request_error", "param": "messages", "code": None}
            }
            self._send_json(400, error)
            return
        calls = stub.calls_for(body)
        reply = "" if calls else stub.reply_for(body, n)
        finish = "tool_calls" if calls else "stop"
        if not body.get("stream"):
            message = tool_calls_message(calls, n) if calls else {"role": "assistant", "content": reply}
            self._send_json(200, {
                "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": _usage(body, reply),
            })  # fmt: skip
            stub.finished_at.append(time.perf_counter())
            return
        if calls:
            deltas = tool_call_deltas(calls, n)
        else:
            size = max(1, -(-len(reply) // stub.chunks)) if stub.chunks else 8
            pieces = [reply[i : i + size] for i in range(0, len(reply), size)] or [""]
            deltas = [{"content": p} for p in pieces]
            deltas[0]["role"] = "assistant"
        span = stub.begin(conversation_of(body), self.connection)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for delta in deltas:
                if stub.delay_s and self._client_closed(stub.delay_s / len(deltas)):
                    stub.end(span, closed_by_client=True)
                    return
                self._event(_chunk(n, body["model"], delta, None))
            self._event(_chunk(n, body["model"], {}, finish))
            usage = _usage(body, reply)
            stub.count_tokens(usage["total_tokens"])
            if (body.get("stream_options") or {}).get("include_usage"):
                self._event({**_chunk(n, body["model"], {}, None), "choices": [], "usage": usage})
            # Ended before the last bytes go: the client cannot send its next request before it has
            # them, while this thread may wait for the GIL once they are sent.
            stub.end(span)
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
            self.wfile.flush()
        except OSError:  # the client went away while we wrote
            stub.end(span, closed_by_client=True)
            return
        stub.finished_at.append(time.perf_counter())

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

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
        return client_closed(self.connection, wait_s)

    def _event(self, obj: dict[str, Any]) -> None:
        self._chunk(f"data: {json.dumps(obj)}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def client_closed(connection: socket.socket, wait_s: float = 0) -> bool:
    """Wait up to ``wait_s``; True as soon as the client has closed ``connection`` (it sends
    nothing while its reply streams, so anything readable is the close)."""
    readable, _, _ = select.select([connection], [], [], wait_s)
    if not readable:
        return False
    try:
        return bool(connection.recv(1, socket.MSG_PEEK) == b"")
    except OSError:
        return True


def _usage(body: dict[str, Any], reply: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4 + 1
    completion = len(reply) // 4 + 1
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


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
        self.raw_requests: list[bytes] = []  # the bodies as they came over the wire
        self.rejected: list[tuple[str, dict[str, Any]]] = []  # (why, body) of requests answered 400
        self.received_at: list[float] = []
        self.received_at_monotonic: list[float] = []
        self.finished_at: list[float] = []
        self.spans: list[Span] = []
        self._open: dict[str, list[Span]] = {}  # each conversation's requests still streaming
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
        if "!empty" in str(last_user):
            return ""
        results = tool_results(body["messages"])
        if results:
            return f"stub reply {n}: the tools said " + "; ".join(f"{name} -> {out}" for name, out in results)
        return f"stub reply {n} to: {last_user}"

    def calls_for(self, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The tools to call in answer to a request that ends with a user message asking for them."""
        messages = body.get("messages") or [{}]
        if messages[-1].get("role") != "user":
            return []
        return tool_directives(str(messages[-1].get("content") or ""))

    def begin(self, conversation: str, connection: socket.socket | None = None) -> Span:
        with self.lock:
            for open_span in self._open.get(conversation, []):
                if open_span.connection is not None and client_closed(open_span.connection):
                    self._end(open_span, closed_by_client=True)
            span = Span(conversation, time.monotonic(), connection=connection)
            self._open.setdefault(conversation, []).append(span)
            self.spans.append(span)
            level = len(self._open[conversation])
            self.max_in_flight[conversation] = max(level, self.max_in_flight.get(conversation, 0))
            self.total_in_flight += 1
            self.max_total_in_flight = max(self.max_total_in_flight, self.total_in_flight)
        return span

    def count_tokens(self, n: int) -> None:
        with self.lock:
            self.tokens.append((time.monotonic(), n))

    def end(self, span: Span, *, closed_by_client: bool = False) -> None:
        with self.lock:
            self._end(span, closed_by_client=closed_by_client)

    def _end(self, span: Span, *, closed_by_client: bool) -> None:
        if span.ended is not None:
            return  # ended by begin() when the conversation's next request came
        span.ended, span.closed_by_client = time.monotonic(), closed_by_client
        self._open[span.conversation].remove(span)
        self.total_in_flight -= 1

    def in_flight(self, conversation: str) -> int:
        with self.lock:
            return len(self._open.get(conversation, []))

    def __enter__(self) -> OpenAIStub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
