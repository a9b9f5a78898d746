"""Ends queued turns whose deadline (expires_after_s) passed while nobody began them.

Where turns begin, begin_head.lua expires a head that is past its deadline. A turn behind a long
one, or in a session no worker serves, would wait for that; the sweep (one worker per interval,
worker/sweep.py) takes the due entries of the deadlines ZSET instead, so a turn ends within about
a sweep interval of its deadline and its stream ends with it. Producers do the same for a turn
they read (producer/steering.py), so a turn expires even while no worker runs at all.
"""

from __future__ import annotations

import logging

from chatlane.scripts import Expire
from worker.runtime import Runtime

log = logging.getLogger("chatlane.expiry")
_BATCH = 500


async def expire_due(rt: Runtime, expire: Expire) -> int:
    """Expire up to a batch of turns whose deadline has passed (by Redis' clock); how many."""
    seconds, micros = await rt.redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    due: list[str] = await rt.redis.zrangebyscore(rt.keys.deadlines, "-inf", now_ms, start=0, num=_BATCH)
    if not due:
        return 0
    async with rt.redis.pipeline(transaction=False) as pipe:
        for tid in due:
            pipe.hget(rt.keys.turn(tid), "session")
        sessions: list[str | None] = await pipe.execute()
    expired = 0
    for tid, sid in zip(due, sessions, strict=True):
        # A turn whose record is gone leaves the ZSET all the same ("gone").
        expired += await expire(turn_id=tid, session_id=sid or "") == "expired"
    if expired:
        log.info("expired %d queued turn(s) past their deadline", expired)
        await rt.redis.hincrby(rt.keys.stats, "turns_expired", expired)  # type: ignore[misc]
    return expired
