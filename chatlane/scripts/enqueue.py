"""Typed caller of ``enqueue.lua``: accept one turn, dedupe it, queue its drain job."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from chatlane.errors import QueueFull
from chatlane.jobs import DrainJob
from chatlane.keys import Keys
from chatlane.scripts.loader import register


@dataclass(frozen=True)
class Accepted:
    turn_id: str
    position: int
    created_ms: int
    drain_queued: bool  # this call queued the session's drain job


@dataclass(frozen=True)
class Duplicate:
    """The idempotency key (or the turn id, on a client retry) already names ``turn_id``."""

    turn_id: str


class Enqueue:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = register(redis, "enqueue")
        self._keys = keys

    async def __call__(
        self,
        *,
        session_id: str,
        turn_id: str,
        text: str,
        idempotency_key: str | None,
        max_waiting: int,
        job: DrainJob,
        metadata: str = "",
    ) -> Accepted | Duplicate:
        """Raises QueueFull (nothing written) when the session already has ``max_waiting`` turns.
        ``metadata``: the turn's metadata as compact JSON (``validate_metadata``), or ""."""
        k, sk = self._keys, self._keys.session(session_id)
        # With no key the script never touches KEYS[4]; any key of the session's slot will do.
        idem = k.idempotency(session_id, idempotency_key) if idempotency_key else sk.inbox
        status, tid, queued, position, created_ms = await self._script(
            keys=[sk.inbox, sk.lease, sk.drain_job, idem, k.turn(turn_id), k.pending, job.key, k.queue],
            args=[session_id, turn_id, text, max_waiting, job.job_id, idempotency_key or "", job.payload,
                  job.expires_ms, metadata],
        )  # fmt: skip
        if status == "full":
            raise QueueFull(session_id, max_waiting)
        if status == "dup":
            return Duplicate(str(tid))
        return Accepted(str(tid), int(position), int(created_ms), bool(queued))
