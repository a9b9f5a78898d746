"""The operator's /v1 routes, for the dashboard at /ui: the fleet, failed turns, retry.

Each is the same query or action as a ``chatlane`` CLI command (producer/admin.py), behind the
same bearer key as the rest of /v1.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from chatlane.turns import TurnStatus
from producer import admin
from producer.api_errors import error_responses
from producer.api_guards import API_PREFIX
from producer.api_params import Producer, TurnId

MAX_WINDOW_S = 86400
MAX_SINCE_S = 10 * 365 * 86400  # far beyond any turn TTL; bounded so the arithmetic stays in range


class Fleet(BaseModel):
    workers_alive: int = Field(description="workers with a heartbeat in the last 10 s")
    queue_depth: int = Field(description="jobs in arq's queue (drains waiting for a slot, delayed hand-backs, sweeps)")
    sessions_pending: int = Field(description="sessions that may have waiting turns")
    counters: dict[str, int] = Field(description="the fleet counters (the Redis `stats` hash), as `chatlane status`")
    window_s: int = Field(description="the window of `ended`, in seconds")
    ended: dict[str, int] = Field(
        description="turns that ended in the last `window_s` seconds, by state (every ended state, zeros too), "
        "counted from the turn records still kept"
    )


class FailedTurns(BaseModel):
    turns: list[TurnStatus] = Field(description="oldest end first")


class Retried(BaseModel):
    retry_of: str = Field(description="the failed turn")
    created: bool = Field(description="false: this turn was retried before, and `turn` is that retry")
    turn: TurnStatus = Field(description="the new turn, at the end of the failed turn's session")


def admin_router(auth: bool) -> APIRouter:
    common = error_responses(401, 503) if auth else error_responses(503)
    r = APIRouter(prefix=API_PREFIX, responses=common, tags=["operate"])

    @r.get("/fleet", summary="Workers, queue depth, counters and recent turn ends", responses=error_responses(422))
    async def fleet(
        producer: Producer,
        window_s: Annotated[
            int, Query(ge=1, le=MAX_WINDOW_S, description="count the turns that ended this many seconds back")
        ] = 60,
    ) -> Fleet:
        """`chatlane status`, plus the turns that ended in the window (for rates). The count SCANs
        the turn records: O(turns kept), like `chatlane failed`."""
        status = await producer.fleet_status()
        ended = await admin.ended_counts(producer, admin.since_ms(window_s))
        return Fleet(
            workers_alive=status.workers_alive,
            queue_depth=status.queue_depth,
            sessions_pending=status.sessions_pending,
            counters=status.counters,
            window_s=window_s,
            ended=ended,
        )

    @r.get("/fleet/failed", summary="Failed turns", responses=error_responses(422))
    async def failed(
        producer: Producer,
        since: Annotated[
            int | None,
            Query(
                ge=0,
                le=MAX_SINCE_S,
                description="only turns that ended at most this many seconds ago (all kept ones if absent)",
            ),
        ] = None,
    ) -> FailedTurns:
        """`chatlane failed`: failed turns whose records are still kept (CHATLANE_TURN_TTL_S). SCANs
        the turn records: O(turns kept)."""
        return FailedTurns(turns=await admin.failed_turns(producer, admin.since_ms(since)))

    @r.post(
        "/turns/{turn_id}/retry",
        status_code=202,
        summary="Retry a failed turn",
        responses={
            200: {"model": Retried, "description": "retried before: the same new turn"},
            202: {
                "description": "enqueued",
                "headers": {"Location": {"description": "the new turn's URL", "schema": {"type": "string"}}},
            },
            **error_responses(
                404,
                409,
                422,
                429,
                describe={
                    409: "the turn has not failed (`turn_not_retryable`), or CHATLANE_ON_BUSY is reject and the "
                    "session has a queued or running turn (`session_busy`)"
                },
            ),
        },
    )
    async def retry(turn_id: TurnId, producer: Producer, response: Response) -> Retried:
        """`chatlane retry`: enqueues the failed turn's text (and metadata) as a new turn at the end of
        its session, with idempotency key `retry:<turn_id>`, so a repeated retry returns the same turn."""
        enq = await admin.retry(producer, turn_id)
        response.status_code = 202 if enq.created else 200
        response.headers["Location"] = f"{API_PREFIX}/turns/{enq.status.turn_id}"
        return Retried(retry_of=turn_id, created=enq.created, turn=enq.status)

    return r
