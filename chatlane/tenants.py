"""Tenants: who owns a session. The name and its rules live here (README "Security").

A tenant is the owner named by an API key (``tenant=key``). A bare key, and the Python client
without ``tenant=``, belong to ``DEFAULT_TENANT``.
"""

from __future__ import annotations

import re

from chatlane.errors import InvalidInput

DEFAULT_TENANT = "default"
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_TENANT_RE = re.compile(TENANT_PATTERN)


def validate_tenant(tenant: str) -> str:
    """Raises InvalidInput unless ``tenant`` matches TENANT_PATTERN; returns it."""
    if not isinstance(tenant, str) or not _TENANT_RE.fullmatch(tenant):
        raise InvalidInput(f"tenant must match {TENANT_PATTERN} (got {tenant!r:.70})")
    return tenant
