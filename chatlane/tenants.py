"""Tenants: who owns a session. The name and its rules live here (README "Security").

A tenant is the owner named by an API key (``tenant=key``). A bare key, and the Python client
without ``tenant=``, belong to ``DEFAULT_TENANT``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chatlane.errors import InvalidInput

DEFAULT_TENANT = "default"
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_TENANT_RE = re.compile(TENANT_PATTERN)


def validate_tenant(tenant: str) -> str:
    """Raises InvalidInput unless ``tenant`` matches TENANT_PATTERN; returns it."""
    if not isinstance(tenant, str) or not _TENANT_RE.fullmatch(tenant):
        raise InvalidInput(f"tenant must match {TENANT_PATTERN} (got {tenant!r:.70})")
    return tenant


@dataclass(frozen=True)
class TenantQuota:
    """A tenant's limits, enforced inside enqueue.lua so that they hold across API processes.

    None: the fleet-wide setting applies (CHATLANE_TENANT_MAX_QUEUED, CHATLANE_TENANT_TURNS_PER_MIN);
    0: no limit. A line of CHATLANE_API_KEYS_FILE may override either for its tenant.
    """

    max_queued: int | None = None
    turns_per_min: int | None = None
