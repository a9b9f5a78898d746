"""Log lines as text or JSON (CHATLANE_LOG_FORMAT), with a turn's ids on every line about a turn.

Both formatters show ``session_id``, ``turn_id`` and ``attempt``: the text one as ``key=value``
after the message, the JSON one as keys of the line's object, so a log search by turn id finds
every line of it. They come from the turn the logging task is serving (``log_context``, set by
the drain as it begins a session and each attempt of a turn, so every line logged meanwhile by
chatlane, LangChain or the model client carries them), or from ``extra=turn_fields(...)`` on
one call, which wins.

``REDIS_OUTAGE`` makes an outage one line however many tasks meet it (every drain job, the
sweep, the webhook sender), and one more when Redis answers again.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar, Token
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


# The turn (or session) the current task serves: asyncio copies it into the tasks it starts.
_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("chatlane_log_context", default=None)


def log_context(
    session_id: str | None = None, turn_id: str | None = None, attempt: int | None = None
) -> Token[dict[str, Any] | None]:
    """Every line this task logs from now on is about this session / turn / attempt; pass the
    token to ``reset_log_context`` when it no longer is."""
    return _CONTEXT.set(turn_fields(session_id, turn_id, attempt))


def reset_log_context(token: Token[dict[str, Any] | None]) -> None:
    _CONTEXT.reset(token)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    ctx = _CONTEXT.get() or {}
    out = {}
    for k in TURN_FIELDS:
        if hasattr(record, k):
            out[k] = getattr(record, k)
        elif k in ctx:
            out[k] = ctx[k]
    return out


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


class Outage:
    """One warning when a dependency first fails and one when it answers again, whichever tasks
    meet the failure in between (the failures after the first go to debug): a Redis restart is two
    lines in the log, not a traceback per drain job and a line per poll. It counts as back once a
    call succeeds with no failure for ``settle_s``, so reads that work while writes still fail
    (a replica promoted late) do not make it flap."""

    def __init__(self, what: str, logger: logging.Logger, settle_s: float = 1.0) -> None:
        self.what = what
        self.log = logger
        self.settle_s = settle_s
        # Where the dependency is (a redacted URL, set by the process at start): in the first line.
        self.location = ""
        self._since: float | None = None
        self._last = 0.0
        self._failures = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, where: str, e: BaseException) -> None:
        self._failures += 1
        self._last = time.monotonic()
        if self._since is None:
            self._since = self._last
            at = f" at {self.location}" if self.location else ""
            self.log.warning("%s unavailable%s (%s: %s), first seen by %s", self.what, at, type(e).__name__, e, where)
        else:
            self.log.debug("%s still unavailable (%s, %s)", self.what, where, type(e).__name__)

    def ok(self) -> None:
        if self._since is not None and time.monotonic() - self._last >= self.settle_s:
            self.log.warning(
                "%s is back after %.1fs (%d failed call(s) meanwhile)",
                self.what, self._last - self._since, self._failures,
            )  # fmt: skip
            self._since = None
            self._failures = 0


REDIS_OUTAGE = Outage("Redis", logging.getLogger("chatlane.redis"))
