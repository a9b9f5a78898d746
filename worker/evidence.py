"""Attempt-end records that must reach Redis even when the holder was cut off from it.

A holder that lost its lease cannot record its attempt's end through the fenced commit, and a
partitioned one cannot reach Redis at all for a while. It keeps the record here and retries
until it is written, or too old to matter. Evidence only: nothing waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from chatlane.logs import turn_fields
from chatlane.scripts import AttemptEnd, AttemptEnded

log = logging.getLogger("chatlane.evidence")

RETRY_S = 1.0
GIVE_UP_S = 600.0


class EvidenceLog:
    def __init__(self, attempt_ended: AttemptEnded) -> None:
        self._attempt_ended = attempt_ended
        self._pending: list[tuple[float, AttemptEnd]] = []
        self._wake = asyncio.Event()

    def add(self, ended: AttemptEnd) -> None:
        self._pending.append((time.monotonic(), ended))
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                since, ended = self._pending[0]
                try:
                    async with asyncio.timeout(RETRY_S):
                        await self._attempt_ended(ended)
                except Exception as e:  # Redis unreachable: keep it, try again in a while
                    if time.monotonic() - since > GIVE_UP_S:
                        log.warning(
                            "dropping the end record of %s attempt %d: %r", ended.turn_id, ended.attempt, e,
                            extra=turn_fields(turn_id=ended.turn_id, attempt=ended.attempt),
                        )  # fmt: skip
                        self._pending.pop(0)
                        continue
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), RETRY_S)
                    self._wake.clear()
                    continue
                self._pending.pop(0)
