"""Stopping a task for sure: cancel it again until it is done.

One ``Task.cancel()`` is not always enough on Python 3.11. Its ``asyncio.wait_for`` returns the
inner result and drops the cancellation when the two land in the same loop iteration (CPython
gh-86296, fixed in 3.12), and redis-py's asyncio client sends every command through
``wait_for`` and checks a pooled connection under ``asyncio.timeout(0)``. Measured with a
``BlockingConnectionPool`` against a replica (each write answered READONLY), 629 of 2,000
cancels timed to land during the command were lost: the task went on with the command's error
and ``cancelling() > 0``. A loop that retries on Redis errors then never ends. That was a lease
keeper renewing, for ever, the lease of a drain that had finished, so its session was never
served again (tests/test_failover.py hung 4 times in 18 runs before this module, 0 in 26 after).
"""

from __future__ import annotations

import asyncio
from typing import Any

# How often a cancelled piece of work is cancelled again until it is done: one cancel of
# BaseChatModel.astream missed about 1 time in 4 (the stream ran on); re-cancelling stopped 30/30.
RECANCEL_S = 0.02


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` every RECANCEL_S until it is done; its outcome is not re-raised."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_S)
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning
