"""Typed caller of ``enqueue.lua``: accept one turn (or join one, or refuse), dedupe it, queue its drain job."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from chatlane.errors import QueueFull, SessionBusy, TenantQuotaExceeded
from chatlane.jobs import DrainJob
from chatlane.keys import Keys
from chatlane.scripts.loader import register
from chatlane.scripts.replication import Replication
from chatlane.settings import Settings
from chatlane.tenants import SessionRef
from chatlane.turns import OnBusy


@dataclass(frozen=True)
class Accepted:
    turn_id: str
    position: int
    created_ms: int
    drain_queued: bool  # this call queued the session's drain job


@dataclass(frozen=True)
class Joined:
    """``on_busy=coalesce``: the text joined ``turn_id``, a queued turn that had not begun."""

    turn_id: str
    coalesced: int  # texts joined to it after its first, this one included


@dataclass(frozen=True)
class Duplicate:
    """The idempotency key (or the turn id, on a client retry) already names ``turn_id``."""

    turn_id: str


class Enqueue:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings, replication: Replication) -> None:
        self._script = register(redis, "enqueue")
        self._keys = keys
        self._settings = settings
        self._replication = replication

    async def __call__(
        self,
        *,
        session: SessionRef,
        turn_id: str,
        text: str,
        idempotency_key: str | None,
        max_waiting: int,
        job: DrainJob,
        metadata: str = "",
        webhook_url: str | None = None,
        on_busy: OnBusy = OnBusy.enqueue,
        expires_after_ms: int = 0,
        max_queued: int = 0,
        turns_per_min: int = 0,
        trace: str = "",
    ) -> Accepted | Joined | Duplicate:
        """Raises QueueFull, SessionBusy (``on_busy=reject``) or TenantQuotaExceeded (the tenant has
        ``max_queued`` turns queued or running, or has used its ``turns_per_min``; 0: no limit),
        nothing written; ReplicationTimeout when the turn (new, joined or repeated) is on the primary
        but not yet on enough replicas. ``session``: whose namespace the turn goes into.
        ``metadata``: the turn's metadata as compact JSON (``validate_metadata``), or "".
        ``expires_after_ms``: the turn ends expired if not begun by then (0: no deadline).
        ``trace``: the W3C traceparent the worker continues (chatlane/tracing.py), or ""."""
        session_id = session.scoped
        k, s, sk, tk = self._keys, self._settings, self._keys.session(session_id), self._keys.tenant(session.tenant)
        # With no key the script never touches KEYS[4]; any key of the session's slot will do.
        idem = k.idempotency(session_id, idempotency_key) if idempotency_key else sk.inbox
        (status, tid, queued, position, created_ms), acked = await self._replication.run(
            self._script,
            keys=[sk.inbox, sk.lease, sk.drain_job, idem, k.turn(turn_id), k.pending, job.key, k.queue, sk.turns,
                  k.webhooks_due, k.deadlines, tk.active, tk.bucket, *sk.idle_keys],
            args=[session_id, turn_id, text, max_waiting, job.job_id, idempotency_key or "", job.payload,
                  job.expires_ms, metadata, webhook_url or "", on_busy.value, expires_after_ms,
                  s.coalesce_window_ms, s.coalesce_max_wait_ms, s.coalesce_max_texts, k.turn_prefix,
                  k.stream_suffix, s.turn_ttl_ms, s.stream_ttl_ms, k.stop_channel_prefix, session.tenant, max_queued,
                  turns_per_min, trace],
        )  # fmt: skip
        if status == "full":
            raise QueueFull(session.session_id, max_waiting)
        if status == "busy":
            raise SessionBusy(session.session_id, int(position))
        if status == "quota":
            raise TenantQuotaExceeded(session.tenant, str(tid), int(queued), int(position))
        self._replication.require(acked, f"enqueue of turn {tid} in session {session_id!r}")
        if status == "dup":
            return Duplicate(str(tid))
        if status == "joined":
            return Joined(str(tid), int(queued))
        return Accepted(str(tid), int(position), int(created_ms), bool(queued))
