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


# Never in a session id (chatlane/turns.py SESSION_ID_PATTERN) nor in a tenant name: a scoped id
# splits at its first SCOPE_SEP unambiguously.
SCOPE_SEP = "/"


@dataclass(frozen=True)
class SessionRef:
    """A session of a tenant. Redis knows it by its ``scoped`` id: the bare session id for the
    default tenant (so the key layout from before tenants holds unchanged) and ``tenant/session``
    for any other. Keys, drain jobs, the pending set and turn records carry the scoped id; what a
    caller or a handler sees is ``session_id`` and ``tenant``."""

    tenant: str
    session_id: str

    @property
    def scoped(self) -> str:
        return self.session_id if self.tenant == DEFAULT_TENANT else f"{self.tenant}{SCOPE_SEP}{self.session_id}"

    @classmethod
    def parse(cls, scoped: str) -> SessionRef:
        tenant, sep, session_id = scoped.partition(SCOPE_SEP)
        return cls(tenant, session_id) if sep else cls(DEFAULT_TENANT, scoped)


def quota_limits(quota: TenantQuota | None, max_queued: int, turns_per_min: int) -> tuple[int, int]:
    """The limits that apply to a tenant: its override where it has one, else the fleet settings
    (``max_queued``, ``turns_per_min``); 0 means no limit."""
    q = quota or TenantQuota()
    return (
        max_queued if q.max_queued is None else q.max_queued,
        turns_per_min if q.turns_per_min is None else q.turns_per_min,
    )
