"""Bare-arq workers for the comparisons: what an arq user runs without chatlane.

Started with ``arq bench.baselines.WorkerSettings`` and configured by the same ``CHATLANE_*``
variables as a chatlane worker (Redis, key prefix → queue name, max_jobs, poll delay, fake
model), so both sides run with identical knobs. JSON job serializer, as in chatlane.

- ``noop``: the floor, a job that does nothing.
- ``turn``: one arq job per chat turn, the straightforward way: load the history window, stream
  the model, append the two messages. No lock: turns of one session may interleave, which is
  this pattern's best case for speed (and why it is unsafe; see ``bench.naive``).
- ``sleep``: a long job holding a slot (B7: what arq's polling costs while jobs run).
- the anti-patterns of ``bench.naive`` (B8).
"""

from __future__ import annotations

import asyncio
from typing import Any

from arq import func
from arq.connections import RedisSettings

from bench import naive
from bench.baseline_runtime import baseline, shutdown, startup
from chatlane.jobs import job_deserializer, job_serializer
from chatlane.keys import Keys
from chatlane.settings import Settings, get_settings
from worker.window import load_window


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def sleep(ctx: dict[str, Any], seconds: float) -> None:
    await asyncio.sleep(seconds)


async def turn(ctx: dict[str, Any], session_id: str, turn_id: str, text: str) -> str:
    b = baseline(ctx)
    key = b.history_key(session_id)
    window = await load_window(b.redis, key, b.settings.history_max_tokens)
    user, ai = await b.reply(window.messages, turn_id, text)
    await b.redis.rpush(key, user, ai)  # type: ignore[misc]
    return ai


def baseline_settings(s: Settings) -> type:
    """arq settings of the baseline worker, built like ``worker.arq_settings.worker_settings``."""
    settings: dict[str, Any] = {
        "functions": [
            func(noop, name="noop"),
            func(sleep, name="sleep"),
            func(turn, name="turn"),
            func(naive.memory_turn, name="memory_turn"),
            func(naive.locked_turn, name="locked_turn"),
        ],
        "redis_settings": RedisSettings.from_dsn(s.redis_url),
        "queue_name": Keys(s.key_prefix).queue,
        "job_serializer": job_serializer,
        "job_deserializer": job_deserializer,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": s.max_jobs,
        "poll_delay": s.poll_delay_s,
        # Same read limit as chatlane's worker, so a full backlog is read the same way.
        "queue_read_limit": max(1000, 10 * s.max_jobs),
        # keep_result stays at arq's default (1 h): the caller reads replies and timestamps there.
    }
    return type("WorkerSettings", (), settings)


def __getattr__(name: str) -> Any:
    # `arq bench.baselines.WorkerSettings` looks it up by name: read the settings then.
    if name == "WorkerSettings":
        return baseline_settings(get_settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
