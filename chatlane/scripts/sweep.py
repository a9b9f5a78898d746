"""Typed caller of ``sweep.lua``: re-queue a drain job for a session nobody serves."""

from __future__ import annotations

from redis.asyncio import Redis

from chatlane.jobs import DrainJob, in_progress_key
from chatlane.keys import Keys
from chatlane.scripts.loader import register
from chatlane.settings import Settings, ms


class Sweep:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self._script = register(redis, "sweep")
        self._keys = keys
        self._settings = settings

    async def __call__(self, *, session_id: str, observed_job_id: str | None) -> bool:
        """True if a new drain job was queued. ``observed_job_id``: the session's drain-job key as
        the caller read it; a key that changed since is left for the next sweep."""
        k, s, sk, job = self._keys, self._settings, self._keys.session(session_id), DrainJob.new(session_id)
        # arq keeps a started job's in-progress key for job_timeout + 10 s.
        in_progress_ttl_ms = ms(s.job_timeout_s + 10)
        res = await self._script(
            keys=[sk.lease, sk.inbox, sk.drain_job, k.pending, job.key, k.queue,
                  in_progress_key(observed_job_id or job.job_id)],
            args=[session_id, observed_job_id or "", job.job_id, job.payload, job.expires_ms, in_progress_ttl_ms,
                  s.lease_ttl_ms],
        )  # fmt: skip
        return bool(res)
