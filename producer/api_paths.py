"""Ids with a percent-encoded ``/`` in the path, answered before routing.

Starlette routes on the decoded path: ``/v1/sessions/a%2Fb/turns`` is routed as
``/v1/sessions/a/b/turns``, a bare 404, and ``/v1/sessions/x%2Fturns`` as ``/v1/sessions/x/turns``,
another route for another session. The raw path still has the client's bytes, so an id with an
encoded slash is answered as the id it is: a session id cannot match the pattern (422
``invalid_input``), a turn id names no turn (404 ``turn_not_found``).
"""

from __future__ import annotations

from urllib.parse import unquote

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from chatlane.errors import InvalidInput, TurnNotFound
from chatlane.turns import SESSION_ID_PATTERN
from producer.api_errors import error_response

_SLASH = b"%2f"


class EncodedSlash:
    """Runs after the auth guard: a caller without a key learns nothing about ids."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            answer = _answer(scope.get("raw_path") or b"")
            if answer is not None:
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _answer(raw_path: bytes) -> Response | None:
    if _SLASH not in raw_path.lower():
        return None
    segments = raw_path.partition(b"?")[0].split(b"/")
    # Found wherever /v1 sits: behind a root path the raw path may carry the prefix.
    for i in range(len(segments) - 2):
        if segments[i] != b"v1" or _SLASH not in segments[i + 2].lower():
            continue
        given = unquote(segments[i + 2].decode("latin-1"))
        if segments[i + 1] == b"sessions":
            message = f"session_id must match {SESSION_ID_PATTERN} (got {given!r:.60})"
            detail = [
                {
                    "loc": ["path", "session_id"],
                    "msg": f"String should match pattern '{SESSION_ID_PATTERN}'",
                    "type": "string_pattern_mismatch",
                }
            ]
            return error_response(422, InvalidInput.code, message, detail=detail)
        if segments[i + 1] == b"turns":
            e = TurnNotFound(given[:64])
            return error_response(e.http_status, e.code, str(e))
    return None
