"""Error bodies of the HTTP API: every failure is JSON ``{"code", "message"}`` with a stable code.

Codes and statuses of the core exceptions come from ``chatlane.errors`` (their ``.code`` and
``.http_status``); the HTTP layer adds ``unauthorized``, ``body_too_large``, ``not_found``,
``method_not_allowed``, ``no_workers`` and ``internal_error``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match

from chatlane.errors import ChatlaneError, InvalidInput, RedisUnavailable

log = logging.getLogger("chatlane.api")


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="where the problem is, e.g. ['body', 'text']")
    msg: str
    type: str


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable error code")
    message: str = Field(description="human-readable explanation")
    detail: list[ErrorDetail] | None = Field(None, description="per-field problems (code invalid_input)")


# Seconds a client should wait before retrying; the queue drains at model speed, Redis
# outages are usually restarts.
RETRY_AFTER = {429: "1", 503: "2"}
_HTTP_CODES = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}

_DESCRIPTIONS = {
    401: "no valid `Authorization: Bearer <key>`, or no keys configured (README: Security); 403 `forbidden`: a "
    "tenant's key named another tenant in X-Chatlane-Tenant",
    404: "unknown turn (or expired after it ended), or unknown route",
    409: "the idempotency key already names a turn with a different text (`idempotency_conflict`), "
    "the turn has ended and cannot be cancelled (`turn_not_cancellable`), or on_busy=reject and the session "
    "has a queued or running turn (`session_busy`)",
    413: "body larger than the cap (`body_too_large`), text longer than CHATLANE_MAX_TEXT_CHARS (`text_too_long`), "
    "or metadata over 4 KiB as JSON (`metadata_too_large`)",
    422: "invalid input (`invalid_input`): see `detail`; a webhook URL whose host is not allowed "
    "(`webhook_not_allowed`)",
    429: "the session already has CHATLANE_MAX_QUEUED_PER_SESSION waiting turns (`session_queue_full`), or the "
    "tenant is at its quota, CHATLANE_TENANT_MAX_QUEUED or CHATLANE_TENANT_TURNS_PER_MIN (`tenant_quota`; "
    "`Retry-After` says when to try again)",
    503: "Redis is unreachable (`redis_unavailable`), or, with CHATLANE_REDIS_MIN_REPLICAS_ACK set, too few "
    "replicas confirmed the write or the turn's end in time (`replication_timeout`; an enqueue is then on the "
    "primary but not acknowledged: retry it with the same idempotency key)",
}


def error_responses(
    *statuses: int, describe: Mapping[int, str] | None = None, by_ref: bool = False
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses.

    ``by_ref`` is for routes whose own media type is not JSON (the SSE stream): FastAPI files a
    ``model`` under the route's media type, so those routes reference the schema as JSON instead.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        text = (describe or {}).get(status) or _DESCRIPTIONS[status]
        entry: dict[str, Any] = {"description": text}
        if by_ref:
            entry["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        else:
            entry["model"] = ErrorBody
        if status in RETRY_AFTER:
            entry["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}
        out[status] = entry
    return out


# What a client is told when Redis is down: where Redis is, and what redis-py said about it,
# is for the server log only.
REDIS_UNAVAILABLE_MESSAGE = "Redis is unavailable; retry later"


# During an outage every request answers 503: the log says so once per this many seconds, with
# how many answers it stands for, rather than once per request.
OUTAGE_LOG_EVERY_S = 10.0


class _OutageLog:
    def __init__(self) -> None:
        self.next_at = 0.0
        self.unlogged = 0

    def record(self, exc: ChatlaneError) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.unlogged += 1
            return
        more = f" (and {self.unlogged} more such answers since the last line)" if self.unlogged else ""
        log.warning("answered %s: %s%s", exc.code, exc, more)
        self.next_at = now + OUTAGE_LOG_EVERY_S
        self.unlogged = 0


_outage_log = _OutageLog()


def public_message(exc: ChatlaneError) -> str:
    """The message of ``exc`` as a client may read it; what is internal goes to the log instead."""
    if isinstance(exc, RedisUnavailable):
        _outage_log.record(exc)
        return REDIS_UNAVAILABLE_MESSAGE
    return str(exc)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    detail: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(code=code, message=message, detail=[ErrorDetail(**d) for d in detail] if detail else None)
    all_headers = dict(headers or {})
    if status in RETRY_AFTER:
        all_headers.setdefault("Retry-After", RETRY_AFTER[status])
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=all_headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> str:
    """The methods some route accepts on the request's path (a session's turns: GET and POST).
    Asked of the routes themselves, so routers included in routers are covered too."""
    routes = request.app.router.routes
    allowed = [m for m in _METHODS if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes)]
    return ", ".join(allowed)


def document_only_our_errors(app: FastAPI) -> None:
    """Drops from OpenAPI the 422 FastAPI adds to every operation with a parameter: its body
    (HTTPValidationError) is not what this API answers, and on an operation whose inputs cannot
    fail validation (a turn id of any shape is a 404) no 422 comes at all. Operations that can
    answer 422 declare it with ``error_responses``."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = plain()  # cached by FastAPI in app.openapi_schema: completed once
        for operations in spec["paths"].values():
            for operation in operations.values():
                answer = operation.get("responses", {}).get("422", {})
                if "HTTPValidationError" in str(answer.get("content")):
                    del operation["responses"]["422"]
        if "HTTPValidationError" not in str(spec["paths"]):
            schemas = spec.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    async def chatlane_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ChatlaneError)
        retry_after = getattr(exc, "retry_after_s", None)  # TenantQuotaExceeded knows when to come back
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return error_response(exc.http_status, exc.code, public_message(exc), headers=headers)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Only loc/msg/type: "input" would echo the whole (possibly huge) body back.
        detail = [
            {"loc": [str(p) if not isinstance(p, int) else p for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in jsonable_encoder(exc.errors())
        ]
        return error_response(422, InvalidInput.code, "the request is not valid", detail=detail)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400:
            # FastAPI answers 400 for a body it cannot decode (not UTF-8); to a client that is
            # the same mistake as malformed JSON, which is 422 invalid_input.
            return error_response(422, InvalidInput.code, f"the request body is not valid JSON: {exc.detail}")
        code = getattr(exc, "code", None) or _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the first route on the path; list them all.
            headers["Allow"] = allowed_methods(request)
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal error; see the server log")

    app.add_exception_handler(ChatlaneError, chatlane_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
