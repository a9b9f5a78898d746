"""ASGI middlewares that reject a request before its body is read: API key, then body size."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatlane.turns import MAX_METADATA_BYTES
from producer.api_errors import error_response

API_PREFIX = "/v1"


def body_limit_bytes(max_text_chars: int) -> int:
    """Largest JSON body that can carry a text of ``max_text_chars`` characters and the largest metadata.

    A JSON encoder may escape one character as a 12-byte surrogate pair (``\\ud83d\\ude00``), and
    one byte of metadata as six (``\\u0001``); 4 KiB covers the idempotency key and the JSON around them.
    """
    return 12 * max_text_chars + 6 * MAX_METADATA_BYTES + 4096


class BodyTooLarge(HTTPException):
    code = "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


class BearerAuth:
    """Requires ``Authorization: Bearer <key>`` on /v1 routes when keys are configured.

    A middleware rather than a route dependency so that it runs before FastAPI reads and
    parses the body: an unauthenticated caller gets 401, never a validation error.
    """

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys and _is_api(scope["path"]) and not self._allowed(scope):
            response = error_response(
                401,
                "unauthorized",
                "send 'Authorization: Bearer <key>' with one of the keys in CHATLANE_API_KEYS",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Headers are latin-1 on the wire; compare every key so timing does not say which matched.
        supplied = token.strip().encode("latin-1")
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(supplied, key)
        return matched


class BodyLimit:
    """Caps request bodies: by Content-Length up front, and by counting a chunked body as it arrives."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            exc = BodyTooLarge(self.max_bytes)
            await error_response(413, exc.code, str(exc.detail))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions from body reading; the app's handler answers.
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


def document_bearer(app: FastAPI) -> None:
    """Declares the bearer scheme on the /v1 operations in OpenAPI, so /docs can send a key.

    Done on the schema rather than with FastAPI's HTTPBearer dependency: BearerAuth already
    checks the key, and a dependency would cost every request a resolution step.
    """
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = plain()  # FastAPI caches this dict in app.openapi_schema; it is completed once
        schemes = spec.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["bearer"] = {"type": "http", "scheme": "bearer", "description": "one of CHATLANE_API_KEYS"}
        for path, operations in spec["paths"].items():
            if _is_api(path):
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _is_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")
