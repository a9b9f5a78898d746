"""Fixtures for the tenant tests: the real API with real tenant keys.

Which tenant a request acts for is the auth middleware's decision (producer/api_guards.py, from
the key). Each tenant here has its own key, ``<tenant>-secret-key``, in a real key file
(CHATLANE_API_KEYS_FILE), with the quota overrides a test asks for on the tenant's line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from chatlane.tenants import TenantQuota
from devkit.api_server import ServedApp
from producer import Settings
from producer.api import create_app

TENANTS = ("acme", "bravo", "default")
# Not read by the server (the key names the tenant): the tests' own bookkeeping of who sent what.
TENANT_HEADER = "X-Test-Tenant"


def key_of(tenant: str) -> str:
    return f"{tenant}-secret-key"


def _line(tenant: str, quota: TenantQuota | None) -> str:
    words = [f"{tenant}={key_of(tenant)}"]
    if quota is not None and quota.max_queued is not None:
        words.append(f"max_queued={quota.max_queued}")
    if quota is not None and quota.turns_per_min is not None:
        words.append(f"turns_per_min={quota.turns_per_min}")
    return " ".join(words)


@pytest.fixture
def tenant_api(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Serve the real API (uvicorn) with ``settings`` and a key per tenant; returns its base URL.
    ``tenant_quotas``: per-tenant overrides, written on the tenants' lines of the key file."""
    servers: list[ServedApp] = []

    def start(settings: Settings, tenant_quotas: dict[str, TenantQuota] | None = None) -> str:
        key_file = tmp_path / f"keys-{len(servers)}.txt"
        key_file.write_text("".join(_line(t, (tenant_quotas or {}).get(t)) + "\n" for t in TENANTS))
        keyed = settings.model_copy(update={"auth": "keys", "api_keys": SecretStr(""), "api_keys_file": str(key_file)})
        server = ServedApp(create_app(keyed, keepalive_s=0.5)).start()
        servers.append(server)
        return server.base_url

    yield start
    for s in servers:
        s.stop()


def as_tenant(url: str, tenant: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key_of(tenant)}", TENANT_HEADER: tenant}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=20)
