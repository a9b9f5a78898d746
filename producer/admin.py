"""Operator queries and actions behind the ``chatlane`` CLI (producer/cli.py) and the dashboard's
/v1 routes (producer/api_admin_routes.py).

Reads go straight to Redis; the one write, ``retry``, is an ordinary enqueue through
``ChatProducer``, so it gets the same validation, limits and atomic script as any turn.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass

from chatlane.errors import TurnNotFound, TurnNotRetryable
from chatlane.messages import decode_messages, turn_id_of
from chatlane.tenants import DEFAULT_TENANT, SessionRef
from chatlane.turns import TurnState, TurnStatus, validate_session_id, validate_turn_id
from producer.client import ChatProducer, Enqueued

SCAN_COUNT = 1000
_ENDED = {s.value for s in TurnState if s.terminal}


@dataclass(frozen=True)
class SessionView:
    session_id: str
    lease_holder: str | None  # worker id of the drain holding the session, if any
    lease_ttl_ms: int | None
    drain_job: str | None  # arq job queued to drain it, if any
    history_messages: int
    inbox: list[TurnStatus]  # running head first, then the queued turns in order
    recent: list[TurnStatus]  # the newest committed turns whose records are still kept, oldest first


def retry_key(turn_id: str) -> str:
    """The idempotency key of a retry: it links the new turn to the failed one (the new record's
    ``idem`` names it) and makes a repeated retry return the same new turn."""
    return f"retry:{turn_id}"


def lease_holder(token: str) -> str:
    """The worker id in a lease token ``<fence>:<holder>:<nonce>`` (claim.lua)."""
    return token.split(":", 1)[1].rsplit(":", 1)[0]


async def _statuses(p: ChatProducer, turn_ids: list[str]) -> list[TurnStatus]:
    out: list[TurnStatus] = []
    for turn_id in turn_ids:
        # A record may expire (CHATLANE_TURN_TTL_S) or go while we read.
        with contextlib.suppress(TurnNotFound):
            out.append(await p.status(turn_id))
    return out


async def session_view(p: ChatProducer, session_id: str, recent: int = 10) -> SessionView:
    validate_session_id(session_id)
    sk = p.keys.session(SessionRef(p.tenant, session_id).scoped)
    async with p.redis.pipeline(transaction=False) as pipe:
        pipe.get(sk.lease)
        pipe.pttl(sk.lease)
        pipe.get(sk.drain_job)
        pipe.llen(sk.history)
        pipe.lrange(sk.inbox, 0, -1)
        pipe.lrange(sk.history, -2 * recent, -1)
        token, ttl, job, length, inbox, tail = await pipe.execute()
    done = list(dict.fromkeys(t for m in decode_messages(tail) if (t := turn_id_of(m))))
    return SessionView(
        session_id,
        lease_holder(token) if token else None,
        int(ttl) if token and int(ttl) >= 0 else None,
        job,
        int(length),
        await _statuses(p, list(inbox)),
        await _statuses(p, done[-recent:]),
    )


def since_ms(seconds_ago: float | None) -> int:
    """Epoch ms ``seconds_ago`` seconds back (0: since ever): `chatlane failed --since` and the
    dashboard's /v1/fleet routes count on one clock."""
    return int((time.time() - seconds_ago) * 1000) if seconds_ago is not None else 0


async def ended_turns(
    p: ChatProducer, since_ms: int = 0, *, every_tenant: bool = False
) -> list[tuple[int, str, TurnState, str]]:
    """(end time in epoch ms, turn id, state, tenant) of the ended turns whose records are still
    kept (CHATLANE_TURN_TTL_S) and that ended at ``since_ms`` or later, oldest end first: the
    producer's tenant's, or ``every_tenant``'s (an operator's view; the API never asks for it).

    A SCAN over the turn records: O(turns kept), paid by the operator's query instead of an index
    every commit would have to write.
    """
    prefix = p.keys.turn_prefix
    record = re.compile(re.escape(prefix) + r"([0-9a-f]{32})")
    ids = [
        m.group(1) async for k in p.redis.scan_iter(match=f"{prefix}*", count=SCAN_COUNT) if (m := record.fullmatch(k))
    ]
    found: list[tuple[int, str, TurnState, str]] = []
    for start in range(0, len(ids), SCAN_COUNT):
        batch = ids[start : start + SCAN_COUNT]
        async with p.redis.pipeline(transaction=False) as pipe:
            for turn_id in batch:
                pipe.hmget(p.keys.turn(turn_id), ["state", "finished", "tenant"])
            rows = await pipe.execute()
        for t, (state, fin, tenant) in zip(batch, rows, strict=True):
            owner = tenant or DEFAULT_TENANT
            if state in _ENDED and fin and int(fin) >= since_ms and (every_tenant or owner == p.tenant):
                found.append((int(fin), t, TurnState(state), owner))
    return sorted(found)


async def failed_turns(p: ChatProducer, since_ms: int = 0) -> list[TurnStatus]:
    """The tenant's failed turns whose records are still kept (CHATLANE_TURN_TTL_S), oldest end first."""
    return await _statuses(p, [t for _, t, state, _ in await ended_turns(p, since_ms) if state is TurnState.failed])


async def failed_turns_of_every_tenant(p: ChatProducer, since_ms: int = 0) -> list[tuple[str, TurnStatus]]:
    """(tenant, status) of every tenant's failed turns still kept, oldest end first: each status is
    read through that tenant's view, as that tenant's own calls would see it."""
    out: list[tuple[str, TurnStatus]] = []
    for _, turn_id, state, tenant in await ended_turns(p, since_ms, every_tenant=True):
        if state is TurnState.failed:
            out += [(tenant, st) for st in await _statuses(p.for_tenant(tenant), [turn_id])]
    return out


async def ended_counts(p: ChatProducer, since_ms: int) -> dict[str, int]:
    """How many kept turns ended at ``since_ms`` or later, by state (every ended state, zeros too)."""
    counts = dict.fromkeys(sorted(_ENDED), 0)
    for _, _, state, _ in await ended_turns(p, since_ms):
        counts[state.value] += 1
    return counts


async def retry(p: ChatProducer, turn_id: str) -> Enqueued:
    """Enqueue a failed turn's text again, as a new turn at the end of its session."""
    validate_turn_id(turn_id)
    old = await p.status(turn_id)
    if old.state is not TurnState.failed:
        raise TurnNotRetryable(turn_id, old.state)
    return await p.submit(old.session_id, old.text, idempotency_key=retry_key(turn_id), metadata=old.metadata or None)
