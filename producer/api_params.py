"""The path parameters and the producer dependency every /v1 router shares."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from chatlane.errors import TurnNotFound
from chatlane.tenants import TenantQuota
from chatlane.turns import SESSION_ID_DESCRIPTION, SESSION_ID_PATTERN, is_turn_id
from producer.client import ChatProducer
from producer.request_tenant import tenant_of

SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description=SESSION_ID_DESCRIPTION)]


async def known_turn_id(
    turn_id: Annotated[str, Path(description="as returned by the enqueue call; any other id: 404 `turn_not_found`")],
) -> str:
    # Not a path pattern: an id that names no turn is a 404 whatever its shape, not a 422.
    if not is_turn_id(turn_id):
        raise TurnNotFound(turn_id[:64])
    return turn_id


TurnId = Annotated[str, Depends(known_turn_id)]


async def producer_of(request: Request) -> ChatProducer:
    """The shared producer, as a view acting for the request's tenant (named by the auth
    middleware) with that tenant's quota overrides (``app.state.tenant_quotas``, from the key file)."""
    # async: FastAPI would run a plain def in its thread pool, a thread hop per request.
    producer: ChatProducer = request.app.state.producer
    tenant = tenant_of(request)
    quotas: dict[str, TenantQuota] = getattr(request.app.state, "tenant_quotas", {})
    quota = quotas.get(tenant)
    if tenant == producer.tenant and quota is None:
        return producer
    return producer.for_tenant(tenant, quota=quota)


Producer = Annotated[ChatProducer, Depends(producer_of)]
