"""The part of ``ChatProducer`` that steers a live session: stop or cancel a turn, list the
session's live turns, and end queued turns whose deadline passed. ``ChatProducer`` inherits it."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from redis.asyncio import Redis

from chatlane.errors import InvalidInput, TurnNotFound
from chatlane.keys import Keys
from chatlane.scripts import Cancel, Expire
from chatlane.tenants import SessionRef
from chatlane.turns import OnBusy, TurnState, TurnStatus, validate_turn_id

T = TypeVar("T")

# The states ``turns()`` can list: the session's inbox holds exactly these turns.
LIVE_STATES = (TurnState.queued, TurnState.running)


class Steering:
    redis: Redis
    keys: Keys
    tenant: str
    _cancel: Cancel
    _expire: Expire

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def status(self, turn_id: str, *, position: int | None = None) -> TurnStatus:
        raise NotImplementedError

    def _ref(self, session_id: str) -> SessionRef:
        raise NotImplementedError

    async def _session_of(self, turn_id: str) -> str:
        """The scoped session of a turn of this tenant; TurnNotFound for any other turn, as for none."""
        session: str | None = await self._call(lambda: self.redis.hget(self.keys.turn(turn_id), "session"))  # type: ignore[arg-type,return-value]
        if session is None or SessionRef.parse(session).tenant != self.tenant:
            raise TurnNotFound(turn_id)
        return session

    async def cancel(self, turn_id: str, reason: str | None = None, *, keep_partial: bool = True) -> TurnStatus:
        """Cancel a queued turn (it ends cancelled at once), or stop a running one: its holder stops
        the model call and ends it interrupted, its partial reply in history (``keep_partial``), or
        cancelled with nothing in history. For a running turn this answers once the request is
        recorded, before the holder has ended it (``state`` still running, ``reason`` says how it
        will end; ``wait()`` or the stream for the end). A turn that has ended raises
        TurnNotCancellable: a cancel racing the commit either stops the turn or finds it completed."""
        validate_turn_id(turn_id)
        session_id = await self._session_of(turn_id)
        stop_reason = reason or ("interrupted by the client" if keep_partial else "cancelled by the client")
        cancel = functools.partial(
            self._cancel, turn_id=turn_id, session_id=session_id, reason=reason or "cancelled by the client",
            keep_partial=keep_partial, stop_reason=stop_reason,
        )  # fmt: skip
        await self._call(cancel)
        return await self.status(turn_id)

    async def turns(self, session_id: str, states: Iterable[TurnState | str] = LIVE_STATES) -> list[TurnStatus]:
        """The session's live turns (queued or running; ``states`` narrows it), in the order they run."""
        wanted = {_state(s) for s in states}
        inbox = self.keys.session(self._ref(session_id).scoped).inbox
        ids: list[str] = await self._call(lambda: self.redis.lrange(inbox, 0, -1))  # type: ignore[arg-type,return-value]
        out: list[TurnStatus] = []
        for position, tid in enumerate(ids):
            try:
                st = await self.status(tid, position=position)
            except TurnNotFound:  # it ended and its record expired between the two reads
                continue
            if st.state in wanted:
                out.append(st)
        return out

    async def _expired_now(self, turn_id: str, rec: dict[str, str]) -> bool:
        """A queued turn past its deadline ends expired now, whether or not a worker runs (the
        sweep does it too, but only while one does). Our clock only says when to ask; expire.lua
        decides by Redis time."""
        if rec.get("state") != TurnState.queued or not rec.get("expires") or rec.get("attempts", "0") != "0":
            return False
        if time.time() * 1000 < int(rec["expires"]):
            return False
        sid = rec["session"]
        return await self._call(lambda: self._expire(turn_id=turn_id, session_id=sid)) == "expired"


def policy(value: OnBusy | str) -> OnBusy:
    try:
        return OnBusy(value)
    except ValueError:
        raise InvalidInput(f"on_busy must be one of {[p.value for p in OnBusy]} (got {value!r:.40})") from None


def _state(value: TurnState | str) -> TurnState:
    try:
        state = TurnState(value)
    except ValueError:
        state = None
    if state not in LIVE_STATES:
        raise InvalidInput(f"states must be among {[s.value for s in LIVE_STATES]} (got {value!r:.40})")
    assert state is not None
    return state
