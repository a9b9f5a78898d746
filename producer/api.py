"""The HTTP API: enqueue turns, poll or stream them, read histories. Serve ``producer.api:app``.

Every route but the probes and docs wants ``Authorization: Bearer <key>`` (api_guards.TenantAuth;
closed when no keys are configured, unless CHATLANE_AUTH=none). Probes: ``/healthz`` (the process
answers) and ``/readyz`` (Redis answers and a worker sent a heartbeat in the last
``READY_HEARTBEAT_S`` seconds). OpenAPI at /openapi.json, docs at /docs, the dashboard at /ui.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from chatlane.export import SessionExport, SessionImported
from chatlane.keys import WORKER_HEARTBEAT_S
from chatlane.settings import Settings, get_settings
from chatlane.startup import StartupError, check_redis_blocking, check_redis_url, fail, load_settings
from chatlane.tracing import TraceRequests, configure_tracing, shutdown_tracing
from chatlane.turns import TurnStatus, WebhookLog
from producer.api_admin_routes import admin_router
from producer.api_errors import document_only_our_errors, error_response, error_responses, install_error_handlers
from producer.api_guards import API_PREFIX, BodyLimit, TenantAuth, body_limit_bytes, document_bearer, public_paths
from producer.api_keys import ApiKeysError, load_keyring
from producer.api_params import Producer, SessionId, TurnId
from producer.api_paths import EncodedSlash
from producer.api_schemas import (
    CancelRequest,
    Health,
    MessagePage,
    Ready,
    SessionDeleted,
    SessionTurns,
    TurnRequest,
    message_of,
)
from producer.client import ChatProducer
from producer.metrics import render
from producer.request_tenant import tenant_of
from producer.sse import LAST_EVENT_ID_PATTERN, turn_events
from producer.stream_hub import StreamHub
from producer.ui_routes import PUBLIC_PATHS, PUBLIC_PREFIXES, install_ui

log = logging.getLogger("chatlane.api")

# Five missed heartbeats mean no worker is alive.
READY_HEARTBEAT_S = 5 * WORKER_HEARTBEAT_S
KEEPALIVE_S = 15.0
MAX_PAGE = 1000

_LOCATION = {"Location": {"description": "the turn's URL, /v1/turns/{turn_id}", "schema": {"type": "string"}}}


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


def v1_router(auth: bool) -> APIRouter:
    common = error_responses(401, 503) if auth else error_responses(503)
    v1 = APIRouter(prefix=API_PREFIX, responses=common)

    @v1.post(
        "/sessions/{session_id}/turns",
        status_code=202,
        summary="Enqueue a chat turn",
        responses={
            200: {
                "model": TurnStatus,
                "description": "an idempotent repeat: the turn this key already names; or (on_busy=coalesce) the "
                "queued turn the text joined",
                "headers": _LOCATION,
            },
            202: {"description": "accepted", "headers": _LOCATION},
            **error_responses(409, 413, 422, 429),
        },
    )
    async def enqueue_turn(
        session_id: SessionId, body: TurnRequest, response: Response, producer: Producer
    ) -> TurnStatus:
        enq = await producer.submit(
            session_id, body.text, idempotency_key=body.idempotency_key, metadata=body.metadata,
            webhook_url=body.webhook_url, on_busy=body.on_busy, expires_after_s=body.expires_after_s,
        )  # fmt: skip
        response.status_code = 202 if enq.created else 200
        response.headers["Location"] = f"{API_PREFIX}/turns/{enq.status.turn_id}"
        return enq.status

    @v1.get("/turns/{turn_id}", summary="A turn's status", responses=error_responses(404))
    async def get_turn(turn_id: TurnId, producer: Producer) -> TurnStatus:
        """While the turn runs, `reply` holds the text generated so far."""
        return await producer.status(turn_id)

    @v1.post(
        "/turns/{turn_id}/cancel",
        summary="Cancel a queued turn, or stop a running one",
        responses={
            200: {"model": TurnStatus, "description": "ended: a queued turn is cancelled at once"},
            202: {
                "model": TurnStatus,
                "description": "a running turn: the stop is recorded and its worker told; `reason` says how it will "
                "end; its stream ends with `end` and the final status",
            },
            **error_responses(404, 409, 422),
        },
    )
    async def cancel_turn(
        turn_id: TurnId, producer: Producer, response: Response, body: CancelRequest | None = None
    ) -> TurnStatus:
        """A turn that has ended: 409 `turn_not_cancellable` (a cancel racing the commit either stops
        the turn or gets this). Body optional: `{"keep_partial": true}` by default."""
        st = await producer.cancel(turn_id, keep_partial=(body or CancelRequest()).keep_partial)
        response.status_code = 200 if st.state.terminal else 202
        return st

    @v1.get("/sessions/{session_id}/turns", summary="A session's live turns", responses=error_responses(422))
    async def session_turns(
        session_id: SessionId,
        producer: Producer,
        state: Annotated[
            str, Query(pattern=r"^(queued|running)(,(queued|running))*$", description="comma-separated states")
        ] = "queued,running",
    ) -> SessionTurns:
        """Its queued and running turns, in the order they run (a page that reloads shows these)."""
        return SessionTurns(session_id=session_id, turns=await producer.turns(session_id, states=state.split(",")))

    @v1.post(
        "/turns/{turn_id}/webhook/redeliver",
        status_code=202,
        summary="Send an ended turn's webhook again",
        responses=error_responses(404, 422),
    )
    async def redeliver_webhook(turn_id: TurnId, producer: Producer) -> WebhookLog:
        """Queues the delivery now, with a new retry span; 422 `webhook_not_allowed` if the turn has
        no webhook or has not ended yet."""
        await producer.redeliver_webhook(turn_id)
        return await producer.webhook_log(turn_id)

    @v1.get("/turns/{turn_id}/webhook", summary="A turn's webhook deliveries", responses=error_responses(404))
    async def webhook_log(turn_id: TurnId, producer: Producer) -> WebhookLog:
        """Every attempt (time, the receiver's status or the error), the state, and the next try."""
        return await producer.webhook_log(turn_id)

    @v1.get(
        "/turns/{turn_id}/stream",
        summary="Stream a turn's tokens (Server-Sent Events)",
        response_class=EventStreamResponse,
        responses={
            200: {
                "description": "events `chunk` {text, attempt}, `reset` {attempt}, `end` (final TurnStatus), "
                "`error` {code, message}; `id:` is resumable with Last-Event-ID",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **error_responses(
                *((401, 404, 422, 429, 503) if auth else (404, 422, 429, 503)),
                by_ref=True,
                describe={
                    429: "too many open streams: CHATLANE_MAX_STREAMS in this server, or "
                    "CHATLANE_MAX_STREAMS_PER_TENANT of the caller's tenant (`stream_limit`)"
                },
            ),
        },
    )
    async def stream_turn(
        request: Request,
        turn_id: TurnId,
        producer: Producer,
        last_event_id: Annotated[
            str, Header(alias="Last-Event-ID", pattern=LAST_EVENT_ID_PATTERN, description="resume after this event")
        ] = "",
    ) -> EventStreamResponse:
        """Replays from the start (or after Last-Event-ID), then follows live until the turn ends."""
        hub: StreamHub = request.app.state.stream_hub
        async with hub.reading():
            st = await producer.status(turn_id)  # 404 as JSON before the stream starts
        slot = hub.admit(tenant_of(request))  # 429 as JSON before the stream starts
        frames = turn_events(
            producer, hub, turn_id, last_event_id, request.app.state.keepalive_s, slot, ended=st.state.terminal
        )
        # X-Accel-Buffering: nginx would otherwise hold chunks back. The background task frees the
        # slot also when the client went away while the frames were not being iterated.
        return EventStreamResponse(
            frames,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(slot.release),
        )

    @v1.get("/sessions/{session_id}/messages", summary="A session's history", responses=error_responses(422))
    async def list_messages(
        session_id: SessionId,
        producer: Producer,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="messages per page")] = 50,
        before: Annotated[int | None, Query(ge=0, description="only messages with index < before")] = None,
    ) -> MessagePage:
        """The newest `limit` messages (before `before`), oldest first; page back with `next_before`."""
        page = await producer.history_page(session_id, limit, before=before)
        messages = [message_of(page.start + i, m) for i, m in enumerate(page.messages)]
        older = page.start if page.start > page.first else None  # nothing before `first`: trimmed
        return MessagePage(session_id=session_id, total=page.total, messages=messages, next_before=older)

    @v1.delete("/sessions/{session_id}", summary="Delete a session and its turns", responses=error_responses(422))
    async def delete_session(session_id: SessionId, producer: Producer) -> SessionDeleted:
        """Erases the history, every turn (queued and running ones are cancelled by removal: their
        status becomes 404), their streams, idempotency keys and webhook logs, atomically. A running
        generation's commit is refused. Deleting a session that does not exist deletes nothing."""
        d = await producer.delete_session(session_id)
        return SessionDeleted(session_id=session_id, turns=d.turns, cancelled=d.cancelled, messages=d.messages)

    @v1.get("/sessions/{session_id}/export", summary="Export a session", responses=error_responses(422))
    async def export_session(session_id: SessionId, producer: Producer) -> SessionExport:
        """The history (as stored, LangChain's messages_to_dict shape) and every turn still kept."""
        return await producer.export_session(session_id)

    @v1.post(
        "/sessions/{session_id}/import",
        summary="Import an exported session",
        responses=error_responses(
            409, 422, describe={409: "the session is not empty (`session_not_empty`): nothing was written"}
        ),
    )
    async def import_session(session_id: SessionId, export: SessionExport, producer: Producer) -> SessionImported:
        """Writes an export's history (and summary) into this session, which must be empty (no history,
        no turns, nothing running: else 409 `session_not_empty`, nothing written). Turn records are not
        imported (their ids are fleet-wide and their streams are gone); the next turn answers from the
        imported history."""
        done = await producer.import_session(export, session_id)
        return SessionImported(session_id=session_id, messages=done.messages, trimmed=done.trimmed)

    return v1


probes = APIRouter(tags=["probes"])


@probes.get("/healthz", summary="The process is up")
async def healthz() -> Health:
    return Health()


@probes.get(
    "/readyz",
    summary="Redis answers and a worker is alive",
    responses=error_responses(
        503, describe={503: "Redis is unreachable (`redis_unavailable`) or no worker is alive (`no_workers`)"}
    ),
    response_model=Ready,
)
async def readyz(producer: Producer) -> Ready | Response:
    workers = await producer.live_workers(READY_HEARTBEAT_S)
    if workers == 0:
        return error_response(
            503, "no_workers", f"Redis answers, but no worker sent a heartbeat in the last {READY_HEARTBEAT_S:g}s"
        )
    return Ready(workers=workers)


@probes.get(
    "/metrics",
    summary="Prometheus metrics of the fleet (README: Operating chatlane)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **error_responses(503)},
)
async def metrics(producer: Producer) -> Response:
    body, content_type = render(await producer.fleet_status())
    return Response(body, media_type=content_type)


def create_app(settings: Settings | None = None, *, keepalive_s: float = KEEPALIVE_S) -> FastAPI:
    # Its Redis connections are named chatlane-api (CLIENT LIST).
    s = (settings or get_settings()).with_role("api")
    check_redis_url(s)  # StartupError now, not a ValueError at the first request
    keyring = load_keyring(s)  # ApiKeysError (one line) on a configuration mistake
    auth = keyring is not None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if keyring is None:
            log.warning("CHATLANE_AUTH=none: the API accepts requests from anyone who can reach it, all as one tenant")
        elif not keyring:
            log.warning("no API keys configured (CHATLANE_API_KEYS, CHATLANE_API_KEYS_FILE): every request but the "
                        "probes and docs is refused with 401; configure keys, or set CHATLANE_AUTH=none")  # fmt: skip
        async with ChatProducer(settings=s) as producer:
            app.state.producer = producer
            hub = StreamHub(
                producer.redis, producer.keys, max_streams=s.max_streams, max_per_tenant=s.max_streams_per_tenant
            )
            app.state.stream_hub = hub
            await hub.start()
            try:
                yield
            finally:
                await hub.stop()
        shutdown_tracing()

    app = FastAPI(
        title="chatlane",
        summary="Enqueue LLM chat turns per session; poll or stream them.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served from local files by install_ui, as is the dashboard
        redoc_url=None,
    )
    app.state.keepalive_s = keepalive_s
    # The key file's per-tenant overrides of the quota settings (tenant -> TenantQuota).
    app.state.tenant_quotas = dict(keyring.quotas) if keyring else {}
    install_error_handlers(app)
    document_only_our_errors(app)
    app.include_router(v1_router(auth=auth))
    app.include_router(probes)
    app.include_router(admin_router(auth=auth))
    install_ui(app)
    app.add_middleware(EncodedSlash)
    app.add_middleware(BodyLimit, max_bytes=body_limit_bytes(s.max_text_chars))
    # The dashboard's and the local docs' static files are public: no data in them (ui_routes).
    public = public_paths(app) | PUBLIC_PATHS
    app.add_middleware(TenantAuth, keyring=keyring, public=public, public_prefixes=PUBLIC_PREFIXES)
    if configure_tracing(s, "chatlane-api"):
        app.add_middleware(TraceRequests)  # before even the key check: a 401 is traced too
    if auth:
        document_bearer(app)
    return app


@functools.cache  # uvicorn.run loads the app twice (a check, then to serve it): build it once
def served_app() -> FastAPI:
    """The app ``uvicorn producer.api:app`` serves, once the start-up checks have passed; a
    configuration mistake ends the process with one line on stderr (chatlane/startup.py). Checked
    here rather than in the lifespan: uvicorn loads the app before it logs anything, so the line
    is the only one, and no traceback follows it."""
    try:
        settings = load_settings()
        check_redis_url(settings)
        check_redis_blocking(settings.with_role("api"), log)
        return create_app(settings)
    except (StartupError, ApiKeysError) as e:
        fail("chatlane api", e)


def __getattr__(name: str) -> FastAPI:
    # `uvicorn producer.api:app` looks the app up by name: build it then, so that importing this
    # module reads no settings from the environment.
    if name == "app":
        return served_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
