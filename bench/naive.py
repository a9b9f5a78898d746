"""ANTI-PATTERNS, benchmark-only (B8). Do not copy: these are the ways chat turns go wrong.

(i) ``memory_turn``: each request gets its own copy of the conversation memory (load it all,
    call the model, save the whole copy back), no lock. Concurrent turns of one session
    overwrite each other: lost turns.
(ii) ``locked_turn``: one arq job per turn that takes a Redis lock for the session and, when
    the lock is busy, raises ``Retry(defer=…)``. A retried turn can be overtaken by a later
    one (reordered turns), each busy check burns one of the job's ``max_tries`` (failed
    turns), and the next turn starts only when its deferral ends (handoff latency).

Both record when each turn's generation started and finished, for the handoff figures.
"""

from __future__ import annotations

import time
from typing import Any

from arq import Retry

from bench.baseline_runtime import baseline
from chatlane.messages import decode_messages
from worker.window import Window, load_window

# arq's documented idiom: defer by a multiple of the try number.
LOCK_RETRY_DEFER_S = 0.1
LOCK_TTL_S = 30.0


def times_key(prefix: str) -> str:
    """HASH turn id -> "started_ms finished_ms" (worker clock; the bench runs on the same host)."""
    return f"{prefix}:bench:times"


async def memory_turn(ctx: dict[str, Any], session_id: str, turn_id: str, text: str) -> str:
    b = baseline(ctx)
    key = b.history_key(session_id)
    started = time.time() * 1000
    stored: list[str] = await b.redis.lrange(key, 0, -1)  # type: ignore[misc]
    window = Window(b.settings.history_max_tokens)
    window.extend(decode_messages(stored))
    user, ai = await b.reply(window.messages, turn_id, text)
    # Save this request's copy of the memory back, as a memory object does: last writer wins.
    async with b.redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.rpush(key, *stored, user, ai)
        pipe.hset(times_key(b.keys.prefix), turn_id, f"{started} {time.time() * 1000}")
        await pipe.execute()
    return ai


async def locked_turn(ctx: dict[str, Any], session_id: str, turn_id: str, text: str) -> str:
    b = baseline(ctx)
    key = b.history_key(session_id)
    lock = b.redis.lock(f"{key}:naive-lock", timeout=LOCK_TTL_S)
    if not await lock.acquire(blocking=False):
        raise Retry(defer=ctx["job_try"] * LOCK_RETRY_DEFER_S)
    try:
        started = time.time() * 1000
        window = await load_window(b.redis, key, b.settings.history_max_tokens)
        user, ai = await b.reply(window.messages, turn_id, text)
        await b.redis.rpush(key, user, ai)  # type: ignore[misc]
        await b.redis.hset(times_key(b.keys.prefix), turn_id, f"{started} {time.time() * 1000}")  # type: ignore[misc]
    finally:
        await lock.release()
    return ai
