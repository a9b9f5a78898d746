"""Fixtures for the tenant tests: an API whose requests act for the tenant a test header names.

Which tenant a request acts for is the auth middleware's decision (``producer/request_tenant.py``,
from the API key). These tests are about what happens after that decision, so a small middleware
stands in for it: it names the tenant from ``X-Test-Tenant``, exactly where the auth middleware
does (``set_tenant``), and everything below it (routes, the producer view, the scripts) is real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from devkit.api_server import ServedApp
from producer import Settings
from producer.api import create_app
from producer.request_tenant import set_tenant

TENANT_HEADER = "X-Test-Tenant"


class TenantFromHeader:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == TENANT_HEADER.lower().encode():
                    set_tenant(scope, value.decode())
        await self.app(scope, receive, send)


@pytest.fixture
def tenant_api() -> Iterator[Callable[..., str]]:
    """Serve the real API (uvicorn) with ``settings``; returns its base URL. ``state`` entries go
    to ``app.state`` (e.g. ``tenant_quotas``, which the auth work fills from the key file)."""
    servers: list[ServedApp] = []

    def start(settings: Settings, **state: Any) -> str:
        app = create_app(settings, keepalive_s=0.5)
        for k, v in state.items():
            setattr(app.state, k, v)
        app.add_middleware(TenantFromHeader)
        server = ServedApp(app).start()
        servers.append(server)
        return server.base_url

    yield start
    for s in servers:
        s.stop()


def as_tenant(url: str, tenant: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={TENANT_HEADER: tenant}, timeout=20)
