"""Fixtures for the HTTP API tests: real uvicorn servers on free ports, real workers, real Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from pydantic import SecretStr

from devkit.api_server import ServedApp
from devkit.redis_server import RedisServer
from producer import Settings
from producer.api import create_app
from tests.conftest import Fleet, new_prefix

API_KEY = "dev-key"
AUTH_SETTINGS = frozenset({"auth", "api_keys", "api_keys_file", "admin_keys"})


@dataclass(frozen=True)
class Api:
    url: str
    settings: Settings

    @property
    def prefix(self) -> str:
        return self.settings.key_prefix


@pytest.fixture(scope="package")
def live(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One API (key ``dev-key``, tenant ``default``) and two workers shared by the tests that need turns to finish."""
    fleet = Fleet(redis_server.url, new_prefix(), tmp_path_factory.mktemp("http-fleet"))
    fleet.start(2)
    settings = fleet.settings.model_copy(update={"api_keys": SecretStr(API_KEY)})
    try:
        with ServedApp(create_app(settings)) as server:
            yield Api(server.base_url, settings)
    finally:
        fleet.stop()


@pytest.fixture
def serve(redis_server: RedisServer) -> Iterator[Callable[..., Api]]:
    """Start an API without workers; keyword arguments override its settings. Without key
    settings it runs with CHATLANE_AUTH=none (tests of auth pass keys or ``auth``)."""
    servers: list[ServedApp] = []

    def start(**overrides: object) -> Api:
        auth = {"auth": "none"} if AUTH_SETTINGS.isdisjoint(overrides) else {}
        base = {"redis_url": redis_server.url, "key_prefix": new_prefix(), **auth}
        settings = Settings(**{**base, **overrides})  # type: ignore[arg-type]
        server = ServedApp(create_app(settings, keepalive_s=0.5)).start()
        servers.append(server)
        return Api(server.base_url, settings)

    yield start
    for s in servers:
        s.stop()
