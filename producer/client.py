"""``ChatProducer``: the async Python client other services use to enqueue and follow turns."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from producer.errors import (
    IdempotencyConflict,
    QueueFull,
    RedisUnavailable,
    TurnNotCancellable,
    TurnNotFound,
    WaitTimeout,
)
from producer.history import decode_messages
from producer.jobs import DrainJob
from producer.keys import Keys
from producer.models import (
    TurnState,
    TurnStatus,
    validate_idempotency_key,
    validate_session_id,
    validate_text,
    validate_turn_id,
)
from producer.scripts import register
from producer.settings import Settings, get_settings
from producer.stream import EventType, StreamEvent, partial_reply

T = TypeVar("T")

# A blocking stream read never waits longer than this, so waiters notice a turn whose stream
# expired or a Redis restart, and socket timeouts stay above it.
_BLOCK_MS = 1000


@dataclass(frozen=True)
class Enqueued:
    status: TurnStatus
    created: bool  # False when an idempotency key returned an existing turn


def connect(settings: Settings) -> Redis:
    """A client that fails fast when Redis is unreachable or hung instead of waiting on it."""
    redis: Redis = Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s + _BLOCK_MS / 1000,
        health_check_interval=30,
    )
    return redis


class ChatProducer:
    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        redis: Redis | None = None,
    ) -> None:
        base = settings or get_settings()
        self.settings = base.model_copy(update={"redis_url": redis_url}) if redis_url else base
        self.keys = Keys(self.settings.key_prefix)
        self._own_redis = redis is None
        self.redis = redis if redis is not None else connect(self.settings)
        self._enqueue = register(self.redis, "producer", "enqueue")
        self._cancel = register(self.redis, "producer", "cancel")

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
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as e:
            raise RedisUnavailable(f"Redis at {self._where()} is unavailable: {e}") from e

    def _where(self) -> str:
        url = self.settings.redis_url
        return url.rsplit("@", 1)[-1]  # never echo credentials

    # -- enqueue ---------------------------------------------------------------------------

    async def enqueue(self, session_id: str, text: str, idempotency_key: str | None = None) -> TurnStatus:
        return (await self.submit(session_id, text, idempotency_key)).status

    async def submit(self, session_id: str, text: str, idempotency_key: str | None = None) -> Enqueued:
        """Enqueue a turn; also says whether it is new or an idempotent repeat."""
        validate_session_id(session_id)
        validate_text(text, self.settings.max_text_chars)
        validate_idempotency_key(idempotency_key)
        turn_id = uuid.uuid4().hex
        job = DrainJob.new(session_id)
        sk = self.keys.session(session_id)
        idem = self.keys.idempotency(session_id, idempotency_key) if idempotency_key else sk.inbox
        keys = [
            sk.inbox,
            sk.lease,
            sk.drain,
            idem,
            self.keys.turn(turn_id),
            self.keys.pending,
            job.key,
            self.keys.queue,
        ]
        argv = [session_id, turn_id, text, self.settings.max_queued_per_session, job.job_id,
                idempotency_key or "", job.payload, job.score_ms, job.argv()[3]]  # fmt: skip

        async def run() -> list[Any]:
            try:
                return await self._enqueue(keys=keys, args=argv)  # type: ignore[no-any-return]
            except redis_errors.ConnectionError:
                # The script may have run before the connection broke. Retrying with the same
                # turn id is safe: the script answers "dup" if the turn record exists. Not
                # after a timeout: Redis is not answering, and a second wait is not failing fast
                # (the caller retries with its idempotency key to stay exactly-once).
                await asyncio.sleep(0.1)
                return await self._enqueue(keys=keys, args=argv)  # type: ignore[no-any-return]

        status, tid, _queued, position, created_ms = await self._call(run)
        if status == "full":
            raise QueueFull(session_id, self.settings.max_queued_per_session)
        if status == "dup":
            existing = await self.status(tid)
            # A turn's text never changes, so comparing after the atomic dedupe is race-free.
            if idempotency_key and existing.text != text:
                raise IdempotencyConflict(idempotency_key, tid)
            return Enqueued(existing, created=tid == turn_id)
        st = TurnStatus.from_record(
            tid,
            {"session": session_id, "text": text, "state": "queued", "created": created_ms},
            int(position),
        )
        return Enqueued(st, created=True)

    async def cancel(self, turn_id: str, reason: str = "cancelled by the client") -> TurnStatus:
        """Withdraw a queued turn; a running or finished one raises TurnNotCancellable."""
        validate_turn_id(turn_id)
        tk = self.keys.turn(turn_id)
        session_id: str | None = await self._call(lambda: self.redis.hget(tk, "session"))  # type: ignore[arg-type,return-value]
        if session_id is None:
            raise TurnNotFound(turn_id)
        s = self.settings
        keys = [tk, self.keys.session(session_id).inbox, self.keys.stream(turn_id)]
        args: list[str | int] = [turn_id, session_id, reason, s.turn_ttl_s * 1000, s.stream_ttl_s * 1000]
        res = await self._call(lambda: self._cancel(keys=keys, args=args))
        if res[0] == "missing":
            raise TurnNotFound(turn_id)
        if res[0] == "state":
            raise TurnNotCancellable(turn_id, res[1])
        return await self.status(turn_id)

    # -- reading ---------------------------------------------------------------------------

    async def status(self, turn_id: str) -> TurnStatus:
        validate_turn_id(turn_id)
        rec: dict[str, str] = await self._call(lambda: self.redis.hgetall(self.keys.turn(turn_id)))  # type: ignore[arg-type,return-value]
        if not rec:
            raise TurnNotFound(turn_id)
        position: int | None = None
        partial: str | None = None
        state = TurnState(rec["state"])
        if state is TurnState.queued:
            inbox = self.keys.session(rec["session"]).inbox
            position = await self._call(lambda: self.redis.lpos(inbox, turn_id))  # type: ignore[arg-type,return-value]
        elif state is TurnState.running:
            partial = partial_reply(await self._read_events(turn_id, "-", block_ms=None))
        return TurnStatus.from_record(turn_id, rec, position, partial)

    async def wait(self, turn_id: str, timeout: float) -> TurnStatus:
        """Wait until the turn ends; blocks on its token stream instead of polling fast."""
        deadline = time.monotonic() + timeout
        last = "0-0"
        while True:
            st = await self.status(turn_id)
            if st.state.terminal:
                return st
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"turn {turn_id} still {st.state.value} after {timeout:g}s")
            block = max(1, min(_BLOCK_MS, int(left * 1000)))
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
        terminal status is reported as one synthetic ``end`` entry.
        """
        last = after
        while True:
            events = await self._read_events(turn_id, last, block_ms=_BLOCK_MS, count=500)
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
        """The whole stored history of a session, oldest first."""
        return await self.history_page(session_id, limit=None)

    async def history_page(self, session_id: str, limit: int | None, before: int | None = None) -> list[BaseMessage]:
        """Up to ``limit`` messages that precede index ``before`` (default: the newest)."""
        validate_session_id(session_id)
        key = self.keys.session(session_id).history
        if limit is None:
            start, end = 0, (-1 if before is None else before - 1)
        else:
            end = -1 if before is None else before - 1
            start = max(0, before - limit) if before is not None else -limit
            if before is not None and before <= 0:
                return []
        raw = await self._call(lambda: self.redis.lrange(key, start, end))  # type: ignore[arg-type,return-value]
        return decode_messages(raw)

    async def history_length(self, session_id: str) -> int:
        validate_session_id(session_id)
        key = self.keys.session(session_id).history
        return await self._call(lambda: self.redis.llen(key))  # type: ignore[arg-type,return-value]

    async def live_workers(self, within_s: float) -> int:
        """Workers whose heartbeat (``Keys.workers``, every WORKER_HEARTBEAT_S) is at most ``within_s`` old.

        Heartbeats carry the worker host's clock; ``within_s`` must cover the skew between hosts.
        """
        since_ms = int((time.time() - within_s) * 1000)
        return await self._call(lambda: self.redis.zcount(self.keys.workers, since_ms, "+inf"))
