"""Log lines as text or JSON (CHATLANE_LOG_FORMAT), with a turn's ids on every line about a turn.

A line about a turn passes ``extra=turn_fields(...)``; both formatters then show ``session_id``,
``turn_id`` and ``attempt``: the text one as ``key=value`` after the message, the JSON one as keys
of the line's object, so a log search by turn id finds every line of it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

TURN_FIELDS = ("session_id", "turn_id", "attempt")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def turn_fields(
    session_id: str | None = None, turn_id: str | None = None, attempt: int | None = None
) -> dict[str, Any]:
    """``extra=`` for a log call about a session's turn (None fields are left out)."""
    values = {"session_id": session_id, "turn_id": turn_id, "attempt": attempt}
    return {k: v for k, v in values.items() if v is not None}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: getattr(record, k) for k in TURN_FIELDS if hasattr(record, k)}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # a traceback stays below the fields
        return head + "".join(f" {k}={v}" for k, v in fields.items()) + sep + tail


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter_config(log_format: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` formatter entry for ``text`` or ``json``."""
    return {"()": JsonFormatter if log_format == "json" else TextFormatter}
