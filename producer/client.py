"""``ChatProducer``: the async Python client other services use to enqueue and follow turns."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from chatlane.connection import BLOCK_MS, REDIS_DOWN, connect, where
from chatlane.errors import (
    HistoryEntryUnreadable,
    IdempotencyConflict,
    RedisUnavailable,
    ReplicationTimeout,
    TurnNotFound,
    WaitTimeout,
    WebhookNotAllowed,
)
from chatlane.export import ExportedSummary, SessionExport
from chatlane.fleet import FleetStatus, read_fleet
from chatlane.jobs import DrainJob
from chatlane.keys import Keys
from chatlane.messages import decode_entry
from chatlane.scripts import (
    Accepted,
    Cancel,
    Deleted,
    DeleteSession,
    Duplicate,
    Enqueue,
    Expire,
    HistoryPageRead,
    Imported,
    ImportSession,
    Joined,
    Replication,
)
from chatlane.scripts.webhooks import WebhookRedeliver
from chatlane.settings import Settings, get_settings
from chatlane.stream import EventType, StreamEvent, partial_reply
from chatlane.tenants import DEFAULT_TENANT, SessionRef, TenantQuota, quota_limits, validate_tenant
from chatlane.tracing import EnqueueSpan, configure_tracing
from chatlane.turns import (
    OnBusy,
    TurnState,
    TurnStatus,
    WebhookLog,
    validate_expires_after,
    validate_idempotency_key,
    validate_metadata,
    validate_session_id,
    validate_text,
    validate_turn_id,
)
from chatlane.webhooks import allowed_hosts, check_webhook_url
from producer.steering import Steering
from producer.steering import policy as to_policy

T = TypeVar("T")


@dataclass(frozen=True)
class Enqueued:
    status: TurnStatus
    created: bool  # False when an idempotency key returned an existing turn, or the text joined one
    joined: bool = False  # on_busy=coalesce: the text joined a queued turn (status.coalesced counts it)


@dataclass(frozen=True)
class HistoryPage:
    # Indexes are absolute: retention (CHATLANE_HISTORY_MAX_MESSAGES) trims the oldest messages
    # without shifting the others' indexes.
    start: int  # index of the first message in the session history
    total: int  # messages in the whole history, trimmed ones included
    # oldest first; an entry that cannot be decoded is there as the error that says why
    messages: list[BaseMessage | HistoryEntryUnreadable]
    first: int = 0  # the oldest index still kept (the messages before it were trimmed)


class ChatProducer(Steering):
    """Acts for one tenant (``tenant``, default DEFAULT_TENANT): its sessions are its own namespace,
    and a turn of another tenant is TurnNotFound, as if it did not exist. ``quota`` overrides the
    fleet's CHATLANE_TENANT_* limits for this tenant (None fields: the setting applies)."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        redis: Redis | None = None,
        tenant: str = DEFAULT_TENANT,
        quota: TenantQuota | None = None,
    ) -> None:
        self.tenant = validate_tenant(tenant)
        self.quota = quota
        base = settings or get_settings()
        self.settings = base.model_copy(update={"redis_url": redis_url}) if redis_url else base
        self.keys = Keys(self.settings.key_prefix)
        self._own_redis = redis is None
        self.redis = redis if redis is not None else connect(self.settings)
        self._replication = Replication.of(self.settings, self.keys)
        self._enqueue = Enqueue(self.redis, self.keys, self.settings, self._replication)
        configure_tracing(self.settings, "chatlane-producer")  # CHATLANE_TRACING=on: spans per enqueue
        self._cancel = Cancel(self.redis, self.keys, self.settings, self._replication)
        self._expire = Expire(self.redis, self.keys, self.settings)
        self._delete = DeleteSession(self.redis, self.keys, self._replication)
        self._import = ImportSession(self.redis, self.keys, self.settings, self._replication)
        self._history_page = HistoryPageRead(self.redis, self.keys)
        self._redeliver = WebhookRedeliver(self.redis, self.keys)

    def for_tenant(self, tenant: str, *, quota: TenantQuota | None = None) -> ChatProducer:
        """A view of this producer acting for ``tenant``: it shares the Redis pool and the loaded
        scripts (cheap enough for one per HTTP request); closing it closes nothing."""
        view = copy.copy(self)
        view.tenant = validate_tenant(tenant)
        view.quota = quota
        view._own_redis = False
        return view

    def _ref(self, session_id: str) -> SessionRef:
        return SessionRef(self.tenant, validate_session_id(session_id))

    def _mine(self, turn_id: str, rec: dict[str, str]) -> dict[str, str]:
        """``rec`` if it is a turn of this tenant; TurnNotFound otherwise (as for no turn at all)."""
        # A record without "session" is a remnant (a late write after its session was deleted).
        if "session" not in rec or SessionRef.parse(rec["session"]).tenant != self.tenant:
            raise TurnNotFound(turn_id)
        return rec

    async def _record(self, turn_id: str) -> dict[str, str]:
        rec: dict[str, str] = await self._call(lambda: self.redis.hgetall(self.keys.turn(turn_id)))  # type: ignore[arg-type,return-value]
        return self._mine(turn_id, rec)

    async def __aenter__(self) -> ChatProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_redis:
            await self.redis.aclose()

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except REDIS_DOWN as e:
            raise RedisUnavailable(f"Redis at {where(self.settings)} is unavailable: {e}") from e

    async def _replicated(self, what: str) -> None:
        """Raises ReplicationTimeout unless everything read so far is on enough replicas.

        A turn's end (status, stream end, history) is reported only once it is replicated: the
        worker's commit waits for its replicas, but the primary shows the commit to readers at
        once, and a failover in between would take back a reply the client has already seen."""
        acked = await self._call(lambda: self._replication.confirm(self.redis))
        self._replication.require(acked, what)

    # -- enqueue ---------------------------------------------------------------------------

    async def enqueue(
        self,
        session_id: str,
        text: str,
        *,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        webhook_url: str | None = None,
        on_busy: OnBusy | str | None = None,
        expires_after_s: float | None = None,
    ) -> TurnStatus:
        """Enqueue a turn. ``metadata``: a JSON object of at most 4 KiB encoded, kept on the turn
        (``TurnStatus.metadata``) and handed to the worker's handler. ``webhook_url`` (default
        CHATLANE_WEBHOOK_URL) is called back when the turn ends. ``on_busy`` and ``expires_after_s``:
        see ``submit``."""
        enq = await self.submit(
            session_id, text, idempotency_key=idempotency_key, metadata=metadata, webhook_url=webhook_url,
            on_busy=on_busy, expires_after_s=expires_after_s,
        )  # fmt: skip
        return enq.status

    async def submit(
        self,
        session_id: str,
        text: str,
        *,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        webhook_url: str | None = None,
        on_busy: OnBusy | str | None = None,
        expires_after_s: float | None = None,
    ) -> Enqueued:
        """Enqueue a turn; also says whether it is new, an idempotent repeat, or joined a queued turn.
        ``on_busy`` (default CHATLANE_ON_BUSY) says what to do while the session has a queued or
        running turn: enqueue, reject (SessionBusy), interrupt, rollback or coalesce.
        ``expires_after_s`` (default CHATLANE_QUEUED_TURN_TTL_S): the turn ends expired if no worker
        has begun it by then."""
        ref = self._ref(session_id)
        validate_text(text, self.settings.max_text_chars)
        validate_idempotency_key(idempotency_key)
        encoded_metadata = validate_metadata(metadata)
        policy = to_policy(on_busy if on_busy is not None else self.settings.on_busy)
        expires_ms = validate_expires_after(
            expires_after_s if expires_after_s is not None else self.settings.queued_turn_ttl_s
        )
        hook = self._webhook(webhook_url)
        turn_id = uuid.uuid4().hex
        max_queued, turns_per_min = quota_limits(
            self.quota, self.settings.tenant_max_queued, self.settings.tenant_turns_per_min
        )
        span = EnqueueSpan(session_id, turn_id)  # its traceparent goes on the turn (chatlane/tracing.py)
        enqueue = functools.partial(
            self._enqueue,
            session=ref,
            turn_id=turn_id,
            text=text,
            idempotency_key=idempotency_key,
            max_waiting=self.settings.max_queued_per_session,
            job=DrainJob.new(ref.scoped),
            metadata=encoded_metadata,
            webhook_url=hook,
            on_busy=policy,
            expires_after_ms=expires_ms,
            max_queued=max_queued,
            turns_per_min=turns_per_min,
            trace=span.traceparent,
        )

        async def run() -> Accepted | Joined | Duplicate:
            try:
                return await enqueue()
            except redis_errors.ConnectionError:
                # The script may have run before the connection broke. Retrying with the same
                # turn id is safe: the script answers "dup" if the turn record exists. Not
                # after a timeout: Redis is not answering, and a second wait is not failing fast
                # (the caller retries with its idempotency key to stay exactly-once).
                await asyncio.sleep(0.1)
                return await enqueue()

        with span:
            res = await self._call(run)
        if isinstance(res, Joined):
            return Enqueued(await self.status(res.turn_id), created=False, joined=True)
        if isinstance(res, Duplicate):
            existing = await self.status(res.turn_id)
            # A turn's texts never change once joined, so comparing after the atomic dedupe is race-free.
            if idempotency_key and text not in existing.texts:
                raise IdempotencyConflict(idempotency_key, res.turn_id)
            return Enqueued(existing, created=res.turn_id == turn_id)
        rec = {"session": session_id, "text": text, "state": "queued", "created": str(res.created_ms),
               "metadata": encoded_metadata}  # fmt: skip
        return Enqueued(TurnStatus.from_record(res.turn_id, rec, res.position), created=True)

    def _webhook(self, url: str | None) -> str | None:
        url = url or self.settings.webhook_url
        if url is None:
            return None
        check_webhook_url(url, allowed_hosts(self.settings.webhook_allow_hosts))
        if not self.settings.webhook_secret.get_secret_value():
            raise WebhookNotAllowed("webhooks need CHATLANE_WEBHOOK_SECRET (deliveries are signed)")
        return url

    async def redeliver_webhook(self, turn_id: str) -> None:
        """Send an ended turn's webhook again now (a new retry span)."""
        validate_turn_id(turn_id)
        session = await self._session_of(turn_id)
        await self._call(lambda: self._redeliver(turn_id=turn_id, session_id=session))

    async def webhook_log(self, turn_id: str) -> WebhookLog:
        """The turn's webhook deliveries so far: state, next try, and every attempt."""
        validate_turn_id(turn_id)
        rec = await self._record(turn_id)
        raw: list[str] = await self._call(lambda: self.redis.lrange(self.keys.webhook_log(turn_id), 0, -1))  # type: ignore[arg-type,return-value]
        return WebhookLog.from_record(rec, raw)

    # -- reading ---------------------------------------------------------------------------

    async def status(self, turn_id: str, *, position: int | None = None) -> TurnStatus:
        """``position``: the caller knows it already (it read the inbox)."""
        validate_turn_id(turn_id)
        rec = await self._record(turn_id)
        partial: str | None = None
        if await self._expired_now(turn_id, rec):
            rec = await self._record(turn_id)
        state = TurnState(rec["state"])
        if state is TurnState.queued:
            if position is None:
                inbox = self.keys.session(rec["session"]).inbox
                position = await self._call(lambda: self.redis.lpos(inbox, turn_id))  # type: ignore[arg-type,return-value]
        elif state is TurnState.running:
            partial = partial_reply(await self._read_events(turn_id, "-", block_ms=None))
        else:
            await self._replicated(f"the end of turn {turn_id}")
        return TurnStatus.from_record(turn_id, rec, position, partial)

    async def wait(self, turn_id: str, timeout: float) -> TurnStatus:
        """Wait until the turn ends; blocks on its token stream instead of polling fast."""
        deadline = time.monotonic() + timeout
        last = "0-0"
        while True:
            try:
                st = await self.status(turn_id)
            except ReplicationTimeout:
                # Ended, but not yet on enough replicas: not an answer yet.
                if time.monotonic() >= deadline:
                    raise
                continue
            if st.state.terminal:
                return st
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"turn {turn_id} still {st.state.value} after {timeout:g}s")
            block = max(1, min(BLOCK_MS, int(left * 1000)))
            # Skip chunks; any new entry or the block timeout triggers one status read.
            while True:
                events = await self._read_events(turn_id, last, block_ms=block, count=1000)
                if not events:
                    break
                last = events[-1].id
                if any(ev.type is EventType.end for ev in events) or time.monotonic() >= deadline:
                    break

    async def events(self, turn_id: str, after: str = "0-0") -> AsyncIterator[StreamEvent]:
        """Every stream entry of the turn after ``after``, live, ending with the ``end`` entry.

        Replays from the start for a late reader. If the stream has already expired the turn's
        terminal status is reported as one synthetic ``end`` entry. Raises TurnNotFound for a turn of
        another tenant, before reading anything of it.
        """
        validate_turn_id(turn_id)
        await self._session_of(turn_id)
        last = after
        while True:
            events = await self._read_events(turn_id, last, block_ms=BLOCK_MS, count=500)
            for ev in events:
                yield ev
                if ev.type is EventType.end:
                    return
            if events:
                last = events[-1].id
                continue
            st = await self.status(turn_id)
            if st.state.terminal and not await self._call(lambda: self.redis.exists(self.keys.stream(turn_id))):
                yield StreamEvent(id=last, type=EventType.end, state=st.state.value)
                return

    async def _read_events(
        self, turn_id: str, after: str, *, block_ms: int | None, count: int | None = None
    ) -> list[StreamEvent]:
        key = self.keys.stream(turn_id)
        if block_ms is None:
            raw = await self._call(lambda: self.redis.xrange(key, min=after))
            return [StreamEvent.parse(i, f) for i, f in raw]
        res = await self._call(lambda: self.redis.xread({key: after}, count=count, block=block_ms))
        return [StreamEvent.parse(i, f) for _, entries in res for i, f in entries]

    async def history(self, session_id: str) -> list[BaseMessage]:
        """The whole stored history of a session, oldest first. Raises HistoryEntryUnreadable if an
        entry cannot be decoded (``history_page`` returns the others, and that error in its place)."""
        messages: list[BaseMessage] = []
        for m in (await self.history_page(session_id, limit=None)).messages:
            if isinstance(m, HistoryEntryUnreadable):
                raise m
            messages.append(m)
        return messages

    async def history_page(self, session_id: str, limit: int | None, before: int | None = None) -> HistoryPage:
        """Up to ``limit`` messages that precede index ``before`` (default: the newest), oldest first.
        Indexes are stable: the history grows at its end, and trimming its oldest messages
        (retention) does not renumber the others (``first`` says where it starts now)."""
        scoped = self._ref(session_id).scoped
        raw = await self._call(lambda: self._history_page(scoped, limit, before))
        await self._replicated(f"the history of session {session_id!r}")
        messages = [_decoded(entry, raw.start + i) for i, entry in enumerate(raw.entries)]
        return HistoryPage(raw.start, raw.total, messages, raw.first)

    async def history_length(self, session_id: str) -> int:
        key = self.keys.session(self._ref(session_id).scoped).history
        return await self._call(lambda: self.redis.llen(key))  # type: ignore[arg-type,return-value]

    async def live_workers(self, within_s: float) -> int:
        """Workers whose heartbeat (``Keys.workers``, every WORKER_HEARTBEAT_S) is at most ``within_s`` old.

        Heartbeats carry the worker host's clock; ``within_s`` must cover the skew between hosts.
        """
        since_ms = int((time.time() - within_s) * 1000)
        return await self._call(lambda: self.redis.zcount(self.keys.workers, since_ms, "+inf"))

    async def fleet_status(self) -> FleetStatus:
        """Workers alive, queue depth, pending sessions and the fleet counters (chatlane/fleet.py)."""
        return await self._call(lambda: read_fleet(self.redis, self.keys))

    # -- erasure ---------------------------------------------------------------------------

    async def delete_session(self, session_id: str) -> Deleted:
        """Erase a session in one fenced script (delete_session.lua): its queued and running turns
        are cancelled by removal, a running drain's commit is refused, and no key of it is left."""
        scoped = self._ref(session_id).scoped
        return await self._call(lambda: self._delete(scoped))

    async def export_session(self, session_id: str) -> SessionExport:
        """The session's history and its turns (those whose records are still kept), as JSON."""
        sk = self.keys.session(self._ref(session_id).scoped)

        async def read() -> tuple[list[str], list[str], int, str | None, list[str | None]]:
            # One transaction: the history and the turn list from the same instant.
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lrange(sk.history, 0, -1)
                pipe.lrange(sk.turns, 0, -1)
                pipe.time()
                pipe.get(sk.trimmed)
                pipe.hmget(sk.summary, ["upto", "text"])
                history, turn_ids, (sec, usec), trimmed, summary = await pipe.execute()
            return list(history), list(turn_ids), sec * 1000 + usec // 1000, trimmed, summary

        history, turn_ids, now_ms, trimmed, (upto, text) = await self._call(read)
        turns: list[TurnStatus] = []
        for turn_id in turn_ids:
            with contextlib.suppress(TurnNotFound):  # expired, or deleted while we read
                turns.append(await self.status(turn_id))
        return SessionExport(
            session_id=session_id,
            exported_at=datetime.fromtimestamp(now_ms / 1000, tz=UTC),
            history=[json.loads(entry) for entry in history],
            history_start=int(trimmed or 0),
            summary=ExportedSummary(upto=int(upto), text=text or "") if upto is not None else None,
            turns=turns,
        )

    async def import_session(self, export: SessionExport, session_id: str | None = None) -> Imported:
        """Write an export's history (and summary) into ``session_id`` (default: the exported one),
        which must be empty: no history, no turns, nothing queued or running. One fenced script
        (import_session.lua) checks that and writes, or writes nothing and raises SessionNotEmpty.
        An entry that is not a message raises InvalidInput, before anything is written.

        The session then goes on from the imported history: the next turn answers from it, and an
        export of it has the same history. Turn records are not imported: turn ids name fleet-wide
        keys (the original session or a second import would share them) and a turn's token stream,
        idempotency key and webhook log are not in an export; the history keeps each message's
        turn id, and the export's ``turns`` stay the record of what happened."""
        scoped = self._ref(export.session_id if session_id is None else session_id).scoped
        entries = export.stored_entries()
        summary = None if export.summary is None else (export.summary.upto, export.summary.text)
        return await self._call(
            lambda: self._import(scoped, entries=entries, history_start=export.history_start, summary=summary)
        )


def _decoded(raw: str, index: int) -> BaseMessage | HistoryEntryUnreadable:
    try:
        return decode_entry(raw, index)
    except HistoryEntryUnreadable as e:
        return e
