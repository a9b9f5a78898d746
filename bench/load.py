"""Writing backlogs of turns to each side and reading back what happened to them.

A backlog is ``{session_id: [text, ...]}``. Turns of one session are enqueued one after the
other (their order is the order the guarantees are about); sessions are enqueued concurrently.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import result_key_prefix
from arq.jobs import JobResult, deserialize_result
from langchain_core.messages import AIMessage
from redis.asyncio import Redis

from bench.env import Side
from chatlane.jobs import job_deserializer, job_serializer
from chatlane.keys import Keys
from chatlane.messages import encode_message, turn_messages
from producer import ChatProducer

T = TypeVar("T")
Backlog = dict[str, list[str]]
_CONCURRENCY = 32


def backlog(sessions: int, turns: int, tag: str = "s", text: str = "hello, how are you today?") -> Backlog:
    run = uuid.uuid4().hex[:6]
    # The session is named in its texts, so a model-side record can tell conversations apart.
    return {(s := f"{tag}{run}-{i}"): [f"{text} ({s}, turn {t})" for t in range(turns)] for i in range(sessions)}


async def bounded(calls: Iterable[Callable[[], Awaitable[T]]], limit: int = _CONCURRENCY) -> list[T]:
    sem = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with sem:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


@dataclass(frozen=True)
class Span:
    """One turn as its own side recorded it (seconds since the epoch)."""

    started: float
    finished: float
    ok: bool


# -- chatlane -------------------------------------------------------------------------------


async def enqueue_chatlane(producer: ChatProducer, work: Backlog) -> dict[str, list[str]]:
    """Turn ids per session, in enqueue order."""

    async def session(sid: str, texts: list[str]) -> list[str]:
        return [(await producer.enqueue(sid, t)).turn_id for t in texts]

    ids = await bounded(lambda s=s, t=t: session(s, t) for s, t in work.items())  # type: ignore[misc]
    return dict(zip(work, ids, strict=True))


async def chatlane_spans(redis: Redis, keys: Keys, turn_ids: list[str]) -> list[Span]:
    """Start and finish of each turn's committed generation, from Redis's own clock (ms)."""
    async with redis.pipeline(transaction=False) as pipe:
        for tid in turn_ids:
            pipe.hmget(keys.turn(tid), ["started", "finished", "state"])
        rows: list[list[str | None]] = await pipe.execute()
    return [
        Span(int(st) / 1000, int(fi) / 1000, state == "completed") if st and fi else Span(0, 0, False)
        for st, fi, state in rows
    ]


async def wait_chatlane(redis: Redis, keys: Keys, timeout: float) -> None:
    """Until no session has work left (a session leaves the pending set when its inbox is empty)."""
    await _until(lambda: _zero(redis.scard(keys.pending)), timeout, "chatlane backlog")  # type: ignore[arg-type]


def filler(n: int, user_chars: int, ai_chars: int) -> list[str]:
    """``n`` encoded history entries, alternating user/assistant, as completed turns leave them."""
    out: list[str] = []
    for _ in range(n // 2):
        tid = uuid.uuid4().hex
        out += [encode_message(m) for m in turn_messages(tid, "u" * user_chars, [AIMessage("a" * ai_chars)])]
    return out


async def prefill(redis: Redis, keys: Keys, session: str, n: int, user_chars: int, ai_chars: int) -> None:
    """Give a session a history of ``n`` chat-sized entries before its first turn."""
    entries = filler(n, user_chars, ai_chars)
    key = keys.session(session).history
    for i in range(0, len(entries), 1000):
        await redis.rpush(key, *entries[i : i + 1000])  # type: ignore[misc]


# -- bare arq -------------------------------------------------------------------------------


async def arq_pool(side: Side) -> ArqRedis:
    return await create_pool(
        RedisSettings.from_dsn(side.settings.redis_url),
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        default_queue_name=side.keys.queue,
    )


async def enqueue_arq(pool: ArqRedis, function: str, work: Backlog) -> dict[str, list[tuple[str, str]]]:
    """(job id, turn id) per session, in enqueue order. Jobs get args (session, turn id, text)."""

    async def session(sid: str, texts: list[str]) -> list[tuple[str, str]]:
        out = []
        for text in texts:
            tid = uuid.uuid4().hex
            job = await pool.enqueue_job(function, sid, tid, text)
            assert job is not None
            out.append((job.job_id, tid))
            # arq orders jobs by their due time in ms; one ms apart keeps a session's order
            # unambiguous (jobs due in the same ms run in job-id order).
            await asyncio.sleep(0.001)
        return out

    ids = await bounded(lambda s=s, t=t: session(s, t) for s, t in work.items())  # type: ignore[misc]
    return dict(zip(work, ids, strict=True))


async def enqueue_arq_jobs(pool: ArqRedis, function: str, args: list[tuple[Any, ...]]) -> list[str]:
    jobs = await bounded(lambda a=a: pool.enqueue_job(function, *a) for a in args)  # type: ignore[misc]
    return [j.job_id for j in jobs if j is not None]


async def arq_results(redis: Redis, job_ids: list[str]) -> list[JobResult | None]:
    raw = await redis.mget([result_key_prefix + j for j in job_ids]) if job_ids else []
    return [deserialize_result(r.encode(), deserializer=job_deserializer) if r else None for r in raw]


def arq_spans(results: list[JobResult | None]) -> list[Span]:
    return [
        Span(r.start_time.timestamp(), r.finish_time.timestamp(), r.success) if r else Span(0, 0, False)
        for r in results
    ]


async def wait_arq(redis: Redis, job_ids: list[str], timeout: float) -> None:
    keys = [result_key_prefix + j for j in job_ids]
    await _until(lambda: _equal(redis.exists(*keys), len(keys)), timeout, "arq backlog")


# -- helpers --------------------------------------------------------------------------------


async def _zero(aw: Awaitable[int]) -> bool:
    return await aw == 0


async def _equal(aw: Awaitable[int], n: int) -> bool:
    return await aw == n


async def _until(cond: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done after {timeout:g}s")
        await asyncio.sleep(interval)
