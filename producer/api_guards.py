"""ASGI middlewares that reject a request before its body is read: API key and tenant, then body size."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from starlette._utils import get_route_path  # the router's own: the guard must see its path
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatlane.tenants import DEFAULT_TENANT, TENANT_PATTERN
from chatlane.turns import MAX_METADATA_BYTES
from producer.api_errors import error_response
from producer.api_keys import KeyRing
from producer.request_tenant import set_tenant

API_PREFIX = "/v1"
_TENANT_RE = re.compile(TENANT_PATTERN)


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


# The paths (relative to the app) anyone may call, each for a reason. Probes: load balancers and
# orchestrators call them without credentials, and they answer nothing about any tenant. /metrics:
# Prometheus scrapes fleet-wide numbers (queue depth, workers, counters), no tenant, session or
# text in them. The OpenAPI schema and its docs pages: they describe the API, no data (Swagger UI
# and ReDoc load their assets from a CDN, so no asset path is served here). Exact paths only.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
TENANT_HEADER = "X-Chatlane-Tenant"


def public_paths(app: FastAPI) -> frozenset[str]:
    """PROBE_PATHS and the app's own schema and docs URLs (None when a page is switched off)."""
    docs = (app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url if app.docs_url else None, app.redoc_url)
    return PROBE_PATHS | {url for url in docs if url}


class TenantAuth:
    """Deny by default: every request needs a valid key unless its path is public.

    The path is decided as the router will route it: relative to ``root_path`` (uvicorn
    --root-path prefixes scope["path"] with it; a Mount sets it too), with the router's own
    function, so no deployment shape can make a path public here and routable as /v1 there.
    On success the tenant goes into the scope (request_tenant.set_tenant) before any route
    handler runs; a refused request never reaches one. A middleware rather than a route
    dependency so that it runs before the body is read: an unauthenticated caller gets 401,
    never a validation error. ``keyring`` None: CHATLANE_AUTH=none, every request is tenant
    "default".
    """

    def __init__(
        self, app: ASGIApp, keyring: KeyRing | None, public: frozenset[str], public_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.public = public
        self.public_prefixes = public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan
            await self.app(scope, receive, send)
            return
        if self.keyring is None:
            set_tenant(scope, DEFAULT_TENANT)
            await self.app(scope, receive, send)
            return
        path = get_route_path(scope)
        if path in self.public or (self.public_prefixes and path.startswith(self.public_prefixes)):
            await self.app(scope, receive, send)
            return
        outcome = self._tenant(self.keyring, Headers(scope=scope))
        if isinstance(outcome, str):
            set_tenant(scope, outcome)
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation; before accept: 403
        else:
            await outcome(scope, receive, send)

    @staticmethod
    def _tenant(keyring: KeyRing, headers: Headers) -> str | Response:
        if not keyring:
            return _unauthorized(
                "no API keys are configured: set CHATLANE_API_KEYS or CHATLANE_API_KEYS_FILE (README: Security), "
                "or CHATLANE_AUTH=none for an API that nothing untrusted can reach"
            )
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _unauthorized("send 'Authorization: Bearer <key>' with an API key")
        # Headers are latin-1 on the wire: this gives back the bytes the client sent.
        grant = keyring.grant(token.encode("latin-1"))
        if grant is None:
            return _unauthorized("the API key is not valid")
        named = headers.get(TENANT_HEADER)
        if grant.tenant is None:
            # An admin key must say whom it acts for: no default that a forgotten header would
            # silently write into.
            if named is None:
                return error_response(
                    422, "invalid_input", f"an admin key acts for the tenant named in the {TENANT_HEADER} header"
                )
            if not _TENANT_RE.fullmatch(named):
                return error_response(422, "invalid_input", f"{TENANT_HEADER} must match {TENANT_PATTERN}")
            return named
        if named is not None and named != grant.tenant:
            return error_response(403, "forbidden", f"only an admin key may name another tenant in {TENANT_HEADER}")
        return grant.tenant


def _unauthorized(message: str) -> Response:
    return error_response(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


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

    Done on the schema rather than with FastAPI's HTTPBearer dependency: TenantAuth already
    checks the key, and a dependency would cost every request a resolution step.
    """
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = plain()  # FastAPI caches this dict in app.openapi_schema; it is completed once
        schemes = spec.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": f"a key of CHATLANE_API_KEYS (acts for its tenant), or an admin key with {TENANT_HEADER}",
        }
        for path, operations in spec["paths"].items():
            if _is_api(path):
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _is_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")
