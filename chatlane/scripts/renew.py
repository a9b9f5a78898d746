"""Typed caller of ``renew.lua``: extend a lease we hold."""

from __future__ import annotations

from enum import IntEnum

from redis.asyncio import Redis

from chatlane.keys import Keys
from chatlane.scripts.loader import register


class Renewal(IntEnum):
    lost = 0  # expired, or another holder's
    renewed = 1
    stop_requested = 2  # renewed, and the watched turn has a stop request (stop_request.lua)


class Renew:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._script = register(redis, "renew")
        self._keys = keys

    async def __call__(
        self, *, lease_key: str, token: str, ttl_ms: int, slot: tuple[str, str] | None = None, watch: str | None = None
    ) -> Renewal:
        """``slot``: the (slots key, member) of a model budget's concurrency slot held now, renewed
        with it. ``watch``: the id of the turn generating now, to look for a stop request on."""
        slots_key, member = slot or (lease_key, "")
        turn_key = self._keys.turn(watch) if watch else lease_key
        res = await self._script(
            keys=[lease_key, self._keys.stats, slots_key, turn_key], args=[token, ttl_ms, member, "1" if watch else ""]
        )
        return Renewal(int(res))
