"""OpenTelemetry spans of a turn, from the HTTP request that sent it to the commit that ends it.

Optional: with CHATLANE_TRACING=off (the default), or in a process that never calls
``configure``, every function here is a no-op and nothing from OpenTelemetry is imported beyond
a failed ``try``. CHATLANE_TRACING=on needs the ``otel`` extra (``pip install 'chatlane[otel]'``).

The trace context travels with the turn: the enqueue stores its span's W3C ``traceparent`` on
the turn record (field ``trace``, enqueue.lua), and whichever worker begins the turn, however
much later and after however many crashes, continues that trace. Spans:

- ``chatlane.enqueue`` (producer): the enqueue script's round trip; a child of the caller's
  current span, in the HTTP API the request's server span (``TraceRequests``, which continues an
  incoming ``traceparent`` header).
- ``chatlane.queue_wait``: the turn's created time to its first attempt's start, both Redis
  times, recorded after the fact; child of the enqueue span.
- ``chatlane.drain``: the turn in the worker that serves it, from its begin to its commit;
  child of the enqueue span. Its children: ``chatlane.model`` (one per attempt) and
  ``chatlane.commit`` (the fenced commit script).

Exporters come from OpenTelemetry's own settings: ``OTEL_TRACES_EXPORTER`` (``otlp``, the
default, ``console``, ``none``, or any installed exporter entry point), ``OTEL_EXPORTER_OTLP_*``
and ``OTEL_SERVICE_NAME``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

from redis.asyncio import Redis

from chatlane.scripts.steps import Begun, StopRequested
from chatlane.settings import Settings

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _PROPAGATOR: Any = TraceContextTextMapPropagator()
except ImportError:  # the `otel` extra is not installed
    trace = None  # type: ignore[assignment]

TRACE_FIELD = "trace"  # the turn record's field holding the enqueue span's traceparent
_SCOPE = "chatlane"
_on = False


def configure_tracing(settings: Settings, service: str) -> bool:
    """Turn tracing on for this process if ``settings.tracing`` says so; whether it is on.

    Installs a tracer provider with the OTEL_TRACES_EXPORTER exporters unless the application
    installed its own first (then chatlane's spans go wherever the application's go)."""
    global _on
    if settings.tracing == "off" or _on:
        return _on
    missing = RuntimeError("CHATLANE_TRACING=on needs OpenTelemetry: pip install 'chatlane[otel]'")
    if trace is None:
        raise missing
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        try:
            provider = _provider(service)
        except ImportError as e:  # the API alone (FastAPI depends on it), without the SDK
            raise missing from e
        trace.set_tracer_provider(provider)
    _on = True
    return True


def _provider(service: str) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the process's default name.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(","):
        name = name.strip()
        if name and name != "none":
            provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    return provider


def _exporter(name: str) -> Any:
    found = {ep.name: ep for ep in entry_points(group="opentelemetry_traces_exporter")}
    if name == "otlp" and "otlp" not in found:
        name = "otlp_proto_http"  # the extra's exporter; `otlp` proper is the gRPC one
    if name not in found:
        raise RuntimeError(f"OTEL_TRACES_EXPORTER={name!r}: no such span exporter installed (have {sorted(found)})")
    return found[name].load()()


def shutdown_tracing() -> None:
    """Flush the spans still buffered (the batch processor exports every few seconds)."""
    if _on:
        provider = trace.get_tracer_provider()
        if hasattr(provider, "shutdown"):
            provider.shutdown()


def _tracer() -> Any:
    return trace.get_tracer(_SCOPE)


class EnqueueSpan:
    """``chatlane.enqueue``, started at once so its ``traceparent`` can go into the enqueue script;
    ``with span:`` around the script's call ends it."""

    def __init__(self, session_id: str, turn_id: str) -> None:
        self.traceparent = ""
        self._span: Any = None
        if _on:
            self._span = _tracer().start_span(
                "chatlane.enqueue", kind=SpanKind.PRODUCER,
                attributes={"chatlane.session_id": session_id, "chatlane.turn_id": turn_id},
            )  # fmt: skip
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self._span))
            self.traceparent = carrier.get("traceparent", "")

    def __enter__(self) -> EnqueueSpan:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._span is not None:
            if exc is not None:
                self._span.record_exception(exc)
                self._span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            self._span.end()


class TurnSpans:
    """A turn's spans in the worker that begins it: ``chatlane.drain`` with its model calls and its
    commit, continuing the trace stored on the turn. Without tracing, an inert stand-in."""

    def __init__(self, traceparent: str | None = None, attributes: dict[str, Any] | None = None) -> None:
        self._drain: Any = None
        self._parent: Any = None
        if _on:
            parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
            self._parent = parent
            self._drain = _tracer().start_span("chatlane.drain", context=parent, attributes=attributes)

    def waited(self, created_ms: int, started_ms: int) -> None:
        """Record ``chatlane.queue_wait`` from the turn's created time to its start (Redis clock)."""
        if self._drain is not None and created_ms:
            span = _tracer().start_span("chatlane.queue_wait", context=self._parent, start_time=created_ms * 1_000_000)
            span.end(end_time=max(created_ms, started_ms) * 1_000_000)

    @contextlib.contextmanager
    def model(self, attempt: int) -> Iterator[None]:
        """``chatlane.model`` around one attempt's handler call, current so that LangChain's or the
        model client's own instrumentation nests under it."""
        if self._drain is None:
            yield
            return
        ctx = trace.set_span_in_context(self._drain)
        with _tracer().start_as_current_span("chatlane.model", context=ctx, attributes={"chatlane.attempt": attempt}):
            yield

    @contextlib.contextmanager
    def commit(self) -> Iterator[None]:
        if self._drain is None:
            yield
            return
        ctx = trace.set_span_in_context(self._drain)
        with _tracer().start_as_current_span("chatlane.commit", context=ctx):
            yield

    def end(self, outcome: str | None = None) -> None:
        """End the drain span (once; later calls do nothing), with how the turn ended."""
        if self._drain is not None:
            if outcome is not None:
                self._drain.set_attribute("chatlane.outcome", outcome)
            self._drain.end()
            self._drain = None


NO_SPANS = TurnSpans()


async def turn_spans(redis: Redis, turn_key: str, session_id: str, step: Begun | StopRequested) -> TurnSpans:
    """The spans of a turn a worker just began (or must commit stopped), under the trace its
    enqueue stored: a begun turn carries it (begin_head.lua reads it with the turn); a stop to
    commit costs one HGET, only with tracing on. A first attempt records its queue wait."""
    if not _on:
        return NO_SPANS
    traceparent: str | None
    if isinstance(step, Begun):
        traceparent = step.trace or None
    else:
        traceparent = await redis.hget(turn_key, TRACE_FIELD)  # type: ignore[misc]
    attrs = {"chatlane.session_id": session_id, "chatlane.turn_id": step.turn_id, "chatlane.attempt": step.attempt}
    spans = TurnSpans(traceparent, attrs)
    if isinstance(step, Begun) and step.attempt == 1:
        spans.waited(step.created_ms, step.started_ms)
    return spans


class TraceRequests:
    """ASGI middleware: a server span per HTTP request, continuing an incoming ``traceparent``
    header, so an enqueue made by the request is its child. Passes requests through untouched
    while tracing is off, and when the request already has a span: recent FastAPI versions trace
    requests themselves once a tracer provider is set (``FastAPI(telemetry=...)``), and so does
    opentelemetry-instrumentation-asgi where an application installed it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not _on or scope["type"] != "http" or trace.get_current_span().get_span_context().is_valid:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method = scope.get("method", "HTTP")
        status: list[int] = []

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        token = otel_context.attach(_PROPAGATOR.extract(headers))
        try:
            with _tracer().start_as_current_span(
                method, kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": scope.get("path", "")},
            ) as span:  # fmt: skip
                try:
                    await self.app(scope, receive, send_status)
                finally:
                    route = scope.get("route")
                    if route is not None and hasattr(route, "path"):
                        # The route's template, not the path: a span name must not carry ids.
                        span.update_name(f"{method} {route.path}")
                        span.set_attribute("http.route", route.path)
                    if status:
                        span.set_attribute("http.response.status_code", status[0])
                        if status[0] >= 500:
                            span.set_status(Status(StatusCode.ERROR))
        finally:
            otel_context.detach(token)
