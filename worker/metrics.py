"""A worker process's Prometheus metrics (served on CHATLANE_METRICS_PORT).

Only what this process saw: each worker process has its own registry and port, and Prometheus
sums them. Fleet-wide numbers kept in Redis (queue depth, workers alive, the ``stats`` counters)
are the API's /metrics (producer/metrics.py), so they are not counted once per worker. No label
names a session or a turn: label values come from small fixed sets (and exception class names).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from chatlane.scripts import Begun
from chatlane.stream import ToolEvent
from worker.turn import Emitter

# Seconds; from a 10 ms poll delay to a slow model's whole reply.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

TURNS_ENDED = Counter("chatlane_turns_ended", "Turns this worker ended with a fenced commit", ["state", "reason"])
MODEL_ERRORS = Counter("chatlane_model_errors", "Failed generation attempts, by exception class", ["type"])
ATTEMPTS = Counter("chatlane_attempts", "Generation attempts begun")
LEASES_LOST = Counter("chatlane_leases_lost", "Drains that stopped because their lease was lost")
TOKENS = Counter("chatlane_tokens", "Model tokens, from usage_metadata", ["direction"])
QUEUE_WAIT = Histogram("chatlane_queue_wait_seconds", "Enqueue to first attempt's start", buckets=_BUCKETS)
FIRST_TOKEN = Histogram("chatlane_time_to_first_token_seconds", "Model call to first text chunk", buckets=_BUCKETS)
GENERATION = Histogram("chatlane_generation_seconds", "Model call to the whole reply", buckets=_BUCKETS)
HANDOFF = Histogram(
    "chatlane_handoff_seconds",
    "End of one turn's generation to the start of the session's next, in one drain",
    buckets=_BUCKETS,
)
RUNNING = Gauge("chatlane_turns_running", "Generations in flight in this process")


def serve(port: int | None) -> None:
    """Start the metrics HTTP server (a daemon thread), if a port is set."""
    if port:
        start_http_server(port)


def turn_begun(turn: Begun) -> None:
    ATTEMPTS.inc()
    if turn.attempt == 1 and turn.created_ms:
        QUEUE_WAIT.observe(max(0, turn.started_ms - turn.created_ms) / 1000)


def turn_committed(ok: bool, *, stopped: bool = False) -> None:
    if stopped:  # interrupted or cancelled, as the client's stop request said (advance.lua)
        TURNS_ENDED.labels("stopped", "stop_request").inc()
        return
    TURNS_ENDED.labels(*(("completed", "reply") if ok else ("failed", "attempts_exhausted"))).inc()


def model_error(e: BaseException) -> None:
    MODEL_ERRORS.labels(type(e).__name__).inc()


def usage(metadata: dict[str, Any] | None) -> None:
    if metadata:
        TOKENS.labels("in").inc(metadata.get("input_tokens", 0))
        TOKENS.labels("out").inc(metadata.get("output_tokens", 0))


class Generation:
    """Times one model call: the running gauge, time to first token and generation time."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._first = False
        RUNNING.inc()

    def emitter(self, inner: Emitter) -> Emitter:
        """``inner``, observing the first text chunk's delay on the way."""
        return _TimedEmitter(self, inner)

    def first_text(self) -> None:
        if not self._first:
            self._first = True
            FIRST_TOKEN.observe(time.perf_counter() - self._start)

    def done(self, ok: bool) -> float:
        """The call ended; returns when (perf_counter), for the handoff to the next turn."""
        RUNNING.dec()
        now = time.perf_counter()
        if ok:
            GENERATION.observe(now - self._start)
        return now


class _TimedEmitter:
    def __init__(self, gen: Generation, inner: Emitter) -> None:
        self._gen = gen
        self._inner = inner

    def text(self, text: str) -> None:
        self._gen.first_text()
        self._inner.text(text)

    def tool(self, event: ToolEvent) -> None:
        self._inner.tool(event)
