"""``OTEL_TRACES_EXPORTER=chatlane_file``: finished spans as JSON lines appended to the file
``DEVKIT_SPAN_FILE`` names, one object per span, for tests and benchmarks to read back
(registered as an exporter entry point in pyproject.toml)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

PATH_ENV = "DEVKIT_SPAN_FILE"


def span_record(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.context
    assert ctx is not None
    return {
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": dict(span.attributes or {}),
    }


class FileSpanExporter(SpanExporter):
    def __init__(self, path: str | None = None) -> None:
        self._path = path or os.environ[PATH_ENV]
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(s), default=str) + "\n" for s in spans)
        with self._lock, open(self._path, "a", encoding="utf-8") as f:
            f.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def read_spans(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
