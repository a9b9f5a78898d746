"""Which tenant a request acts for: the auth middleware decides, route handlers read it here."""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.types import Scope

from chatlane.tenants import DEFAULT_TENANT

# The ASGI scope key the auth middleware fills before any route handler runs.
TENANT_SCOPE_KEY = "chatlane.tenant"


def set_tenant(scope: Scope, tenant: str) -> None:
    scope[TENANT_SCOPE_KEY] = tenant


def tenant_of(conn: HTTPConnection) -> str:
    """The tenant the auth middleware named; DEFAULT_TENANT when auth is off (CHATLANE_AUTH=none)."""
    tenant: str = conn.scope.get(TENANT_SCOPE_KEY, DEFAULT_TENANT)
    return tenant
