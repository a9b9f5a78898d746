"""The one place that names chatlane's Redis keys.

All keys of one session share the hash tag ``{scoped}`` (its scoped id, chatlane/tenants.py
SessionRef: the bare session id for the default tenant, ``tenant/session`` for others) so that
every per-session script touches one slot, and one tenant's session never names another's keys.
Turn records are keyed by turn id alone (a status lookup knows only the id, and the record says
whose it is); like arq itself, chatlane therefore runs against one Redis primary.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every worker refreshes its entry in ``Keys.workers`` this often (readiness counts on it).
WORKER_HEARTBEAT_S = 2.0


@dataclass(frozen=True)
class SessionKeys:
    inbox: str  # LIST of waiting turn ids, head = next to run
    history: str  # LIST of JSON messages, oldest first
    lease: str  # STRING holder token, PX ttl
    fence: str  # counter, bumped by every claim
    drain_job: str  # STRING id of the arq drain job queued for this session, if any
    summary: str  # HASH upto, text: summary of history[0:upto] (history strategy "summarize")
    turns: str  # LIST of every turn id enqueued in the session, in order (delete and export read it)
    # counter: history entries trimmed from the front (CHATLANE_HISTORY_MAX_MESSAGES): an entry's
    # absolute index is this plus its place in ``history``, so indexes (paging, summary ``upto``)
    # never shift when the oldest entries go
    trimmed: str

    @property
    def idle_keys(self) -> tuple[str, str, str, str, str]:
        """What is left of a session with nothing queued or running: these expire together after
        CHATLANE_SESSION_IDLE_TTL_S (session_idle.lua), and enqueue.lua makes them persistent again."""
        return (self.history, self.fence, self.summary, self.turns, self.trimmed)


@dataclass(frozen=True)
class TenantKeys:
    """A tenant's quota state (enqueue.lua enforces it, CHATLANE_TENANT_*)."""

    active: str  # SET of the tenant's queued and running turn ids (end_turn.lua removes each)
    bucket: str  # HASH tokens, at: its turns-per-minute token bucket (token_bucket.lua)


@dataclass(frozen=True)
class BudgetKeys:
    """A model's fleet-wide budget (see budget_acquire.lua)."""

    slots: str  # ZSET concurrency slot -> expiry ms
    bucket: str  # HASH rpm / tpm tokens left, time of the last refill
    pause: str  # STRING with PX while the provider asked us to back off (429)
    waiters: str  # ZSET session -> ms it began waiting for a slot
    seen: str  # HASH session -> ms a waiter last asked


@dataclass(frozen=True)
class Keys:
    prefix: str = "chatlane"

    @property
    def queue(self) -> str:
        """arq queue (ZSET) that carries drain and sweep jobs."""
        return f"{self.prefix}:queue"

    @property
    def pending(self) -> str:
        """SET of session ids that may have waiting turns (the sweep's work list)."""
        return f"{self.prefix}:pending"

    @property
    def stats(self) -> str:
        """HASH of fleet-wide counters (stale commits rejected, leases lost, ...)."""
        return f"{self.prefix}:stats"

    @property
    def webhooks_due(self) -> str:
        """ZSET turn id -> ms its webhook is due (the outbox: end_turn.lua adds, workers deliver)."""
        return f"{self.prefix}:webhooks:due"

    def webhook_log(self, turn_id: str) -> str:
        """LIST of JSON delivery attempts of a turn's webhook (expires with the turn record)."""
        return f"{self.turn_prefix}{turn_id}{self.webhook_suffix}"

    webhook_suffix = ":webhook"

    @property
    def deadlines(self) -> str:
        """ZSET turn id -> epoch ms by which a queued turn must start (expires_after_s; expire.lua)."""
        return f"{self.prefix}:deadlines"

    @property
    def stop_channel_prefix(self) -> str:
        """Pub/sub channels, one per worker process: a stop request for a running turn is published
        on its holder's channel (stop_request.lua reads the holder from the lease token)."""
        return f"{self.prefix}:stop:"

    def stop_channel(self, worker_id: str) -> str:
        return f"{self.stop_channel_prefix}{worker_id}"

    @property
    def sweep_turn(self) -> str:
        """STRING with PX: the worker whose turn it is to sweep this interval (one sweep per interval)."""
        return f"{self.prefix}:sweep"

    @property
    def workers(self) -> str:
        """ZSET worker id -> last heartbeat (epoch ms)."""
        return f"{self.prefix}:workers"

    @property
    def replication_barrier(self) -> str:
        """Pub/sub channel nobody listens to: a PUBLISH there marks a point in the replication
        stream for WAIT to wait for (chatlane/scripts/replication.py)."""
        return f"{self.prefix}:replication-barrier"

    @property
    def turn_prefix(self) -> str:
        return f"{self.prefix}:turn:"

    def turn(self, turn_id: str) -> str:
        """HASH with the turn record."""
        return f"{self.turn_prefix}{turn_id}"

    stream_suffix = ":stream"

    def stream(self, turn_id: str) -> str:
        """STREAM of token chunks of a turn (replayable by late readers)."""
        return f"{self.turn_prefix}{turn_id}{self.stream_suffix}"

    @property
    def stream_channels(self) -> str:
        """Pub/sub pattern of the channels that say "this turn's stream has new entries".

        The scripts that add chunks, tool events, a reset and the end to a turn's stream, or delete
        it (publish_chunks.lua, begin_head.lua, end_turn.lua, delete_session.lua) PUBLISH on a
        channel named like the stream key itself, so no script needs the channel as another
        argument; one PSUBSCRIBE per API process (producer/stream_hub.py) hears every stream. Of
        the channels chatlane publishes on, only these end with ``stream_suffix``."""
        return f"{self.prefix}:*{self.stream_suffix}"

    def session(self, session_id: str) -> SessionKeys:
        """``session_id``: the scoped id (SessionRef.scoped), as workers and turn records carry it."""
        base = f"{self.prefix}:{{{session_id}}}"
        return SessionKeys(
            inbox=f"{base}:inbox",
            history=f"{base}:history",
            lease=f"{base}:lease",
            fence=f"{base}:fence",
            drain_job=f"{base}:drain",
            summary=f"{base}:summary",
            turns=f"{base}:turns",
            trimmed=f"{base}:trimmed",
        )

    def tenant(self, tenant: str) -> TenantKeys:
        base = f"{self.prefix}:tenant:{tenant}"
        return TenantKeys(active=f"{base}:active", bucket=f"{base}:bucket")

    def budget(self, model: str) -> BudgetKeys:
        base = f"{self.prefix}:budget:{model}"
        return BudgetKeys(f"{base}:slots", f"{base}:bucket", f"{base}:pause", f"{base}:waiters", f"{base}:seen")

    def idempotency(self, session_id: str, key: str) -> str:
        return f"{self.prefix}:{{{session_id}}}:idem:{key}"
