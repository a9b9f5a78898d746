"""What a drain does when its commit ran on the primary but too few replicas confirmed it.

With CHATLANE_REDIS_MIN_REPLICAS_ACK=N the fenced commit (advance.lua) is followed by WAIT; when
WAIT times out the commit is on the primary only, and the same script has already begun the next
turn there. The drain then holds the session: it keeps its lease (renewals go on) and starts
nothing more until the replicas confirm, then carries on from the step the commit took.

Why hold, rather than carry on or give the session up:
- Carrying on would stack more unconfirmed commits on one that a failover may still take back.
- Giving the lease up (or handing back) would have the next holder begin the next turn again:
  an attempt counted for nothing, each time, for as long as the replicas are behind. Holding
  costs nothing but the wait; nothing is generated or written meanwhile. Clients do not see the
  turn end meanwhile either: a producer reports an end only once it is replicated.
- If the primary dies meanwhile, renewals fail and the lease is given up as after any outage
  (G6). Once a barrier is confirmed the primary answering may be a promoted replica that never
  had the commit, so the turn's state is read back: if the commit is not there the session is
  handed back and its next holder re-runs the turn. The fence and the head check in advance.lua
  keep history right either way (G2, G3): a later commit of this holder that rests on a lost one
  finds another turn at the head and is refused.
A hold that outlives the drain's job timeout is cancelled like any drain: handed back.
"""

from __future__ import annotations

import logging
import time

from chatlane.errors import CommitNotReplicated, LeaseLost
from chatlane.logs import turn_fields
from chatlane.scripts import Begun, Replication, Step
from worker.lease import Lease
from worker.runtime import Runtime

log = logging.getLogger("chatlane.drain")


async def hold_until_replicated(rt: Runtime, lease: Lease, err: CommitNotReplicated) -> Step:
    """The step of the commit in ``err``, once replicated; LeaseLost if the lease or the commit is gone."""
    if not isinstance(err.step, Begun):
        # The commit also released the lease (inbox empty) or stopped to hand back: nothing more
        # would rest on it here. If a failover takes it back, the turn is at the head of the
        # inbox again on the new primary and the sweep serves it.
        log.warning("session %s: %s", lease.session_id, err)
        return err.step
    replication = Replication.of(rt.settings, rt.keys)
    log.warning("session %s: %s; holding the session until they do", lease.session_id, err)
    await rt.redis.hincrby(rt.keys.stats, "commits_held_for_replicas", 1)  # type: ignore[misc]
    t0 = time.monotonic()
    # Each confirm waits up to the WAIT timeout itself: no sleep between them.
    while replication.short(await lease.guard(replication.confirm(rt.redis))):
        pass
    state = await lease.guard(rt.redis.hget(rt.keys.turn(err.turn_id), "state"))  # type: ignore[arg-type]
    if state not in ("completed", "failed", "interrupted", "cancelled"):  # what a commit ends a turn as
        log.warning(
            "session %s: the commit of turn %s did not survive a failover (state now %s); handing the session back",
            lease.session_id, err.turn_id, state,
        )  # fmt: skip
        await lease.handback()
        raise LeaseLost(lease.lease_key)
    waited = time.monotonic() - t0
    log.info(
        "session %s: commit of turn %s replicated after %.2fs more", lease.session_id, err.turn_id, waited,
        extra=turn_fields(lease.session_id, err.turn_id),
    )  # fmt: skip
    return err.step
