"""Fixtures for the dashboard tests: Debian's Chromium under Playwright, against a real API with
real fake-model workers on a real Redis."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright
from pydantic import SecretStr

from devkit.agent_example import HANDLER as AGENT
from devkit.api_server import ServedApp
from devkit.redis_server import RedisServer
from devkit.ui_screenshot import CHROMIUM, launch_chromium
from producer import Settings
from producer.api import create_app
from tests.conftest import Fleet, new_prefix

UI_KEY = "ui-key"
# Slow enough that a reply visibly streams (8 chunks of 250 ms), fast enough for the suite.
FAKE_DELAY_MS = 2000
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Waits, not speed limits: generous for a loaded CI machine (Playwright's expect() defaults to 5 s).
WAIT_MS = 30_000
expect.set_options(timeout=WAIT_MS)


@dataclass(frozen=True)
class UiApi:
    url: str
    settings: Settings
    key: str | None


@dataclass
class Offsite:
    """Requests a page made to any host but this machine; each was refused."""

    urls: list[str] = field(default_factory=list)


def _need_chromium() -> None:
    if not CHROMIUM.exists():
        # .ci/run installs it; anywhere else a missing browser is a reason to skip, not a failure.
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run should have installed it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")


def client(api: UiApi) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api.key}"} if api.key else {}
    return httpx.Client(base_url=api.url, headers=headers, timeout=10)


def wait_state(c: httpx.Client, turn_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st: dict[str, Any] = c.get(f"/v1/turns/{turn_id}").json()
        if st["state"] == state or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


@pytest.fixture(scope="package")
def ui_api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiApi]:
    """The API (key ``ui-key``) and two workers running the example agent (its tools run when a text
    says ``!tool=...``, so histories hold tool calls and results) on the fake model, which takes
    FAKE_DELAY_MS a reply."""
    fleet = Fleet(redis_server.url, new_prefix(), tmp_path_factory.mktemp("ui-fleet"))
    # A long reply ("!delay=...") must not hit the model timeout before the test stops it.
    fleet.start(2, handler=AGENT, fake_delay_ms=FAKE_DELAY_MS, model_timeout_s=120, max_attempts=2)
    settings = fleet.settings.model_copy(update={"api_keys": SecretStr(UI_KEY)})
    try:
        with ServedApp(create_app(settings)) as server:
            yield UiApi(server.base_url, settings, UI_KEY)
    finally:
        fleet.stop()


@pytest.fixture(scope="package")
def tenant_api(ui_api: UiApi) -> Iterator[UiApi]:
    """A second API on ``ui_api``'s Redis and workers, with tenant keys: ``acme-key`` (tenant acme),
    ``other-key`` (tenant other) and the admin key ``admin-key``. ``key`` is acme's."""
    keys = {"api_keys": SecretStr("acme=acme-key,other=other-key"), "admin_keys": SecretStr("admin-key")}
    settings = ui_api.settings.model_copy(update=keys)
    with ServedApp(create_app(settings)) as server:
        yield UiApi(server.base_url, settings, "acme-key")


@pytest.fixture(scope="package")
def open_api(redis_server: RedisServer) -> Iterator[UiApi]:
    """An API with auth off (CHATLANE_AUTH=none) and no workers."""
    settings = Settings(redis_url=redis_server.url, key_prefix=new_prefix(), auth="none")
    with ServedApp(create_app(settings)) as server:
        yield UiApi(server.base_url, settings, None)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    _need_chromium()
    with sync_playwright() as pw:
        b = launch_chromium(pw)
        yield b
        b.close()


@pytest.fixture
def offsite() -> Offsite:
    return Offsite()


@pytest.fixture
def context(browser: Browser, offsite: Offsite) -> Iterator[BrowserContext]:
    """A fresh browser profile (empty sessionStorage) that lets no request leave this machine."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(WAIT_MS)

    def only_local(route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or parts.hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            offsite.urls.append(url)
            route.abort()

    ctx.route("**/*", only_local)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()
