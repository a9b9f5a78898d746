"""Auth holds in every deployment shape (README "Security"), and the key settings.

Shapes, each a real uvicorn server on loopback: served at the root; ``--root-path /chat`` (uvicorn
then puts the prefix into scope["path"]: the shape of the old bypass); mounted at /chat inside
another ASGI app; behind a real reverse proxy that strips /chat (devkit/strip_proxy.py), with and
without ``--root-path``. In each: no key and wrong keys get 401 and write nothing; a tenant's key
acts for its tenant; an admin key acts for the tenant its header names.

Which tenant a request reached the routes with is read from the scope the auth middleware
filled (what route handlers read with ``tenant_of``), by a test-side ASGI wrapper around the app
that copies it into a response header: no route or code path exists for it in the product.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatlane.tenants import TenantQuota
from devkit.api_server import ServedApp
from devkit.redis_server import RedisServer, free_port
from devkit.strip_proxy import StripProxy
from producer import Settings
from producer.api import create_app
from producer.api_keys import ApiKeysError, load_keyring
from producer.request_tenant import TENANT_SCOPE_KEY
from tests.conftest import new_prefix, sid

ALPHA_KEY = "alpha-key-4f1c"
BETA_KEY = "beta-key-9a2e"
ADMIN_KEY = "admin-key-77d0"
SEEN = "x-test-seen-tenant"


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# alpha's key in clear, beta's only as its hash, one admin key.
KEY_SETTINGS = {
    "api_keys": SecretStr(f"alpha={ALPHA_KEY}, beta=sha256:{sha256_hex(BETA_KEY)}"),
    "admin_keys": SecretStr(ADMIN_KEY),
}


class SeenTenant:
    """Test-side ASGI wrapper: the tenant the auth middleware put into the scope, as a header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tell(message: Message) -> None:
            tenant = scope.get(TENANT_SCOPE_KEY)
            if message["type"] == "http.response.start" and tenant is not None:
                message = {**message, "headers": [*message.get("headers", []), (SEEN.encode(), tenant.encode())]}
            await send(message)

        await self.app(scope, receive, tell)


@dataclass(frozen=True)
class Shape:
    name: str
    base: str  # what clients call, any prefix included
    prefix: str  # the app's Redis key prefix


def mounted(app: FastAPI) -> Starlette:
    # Starlette does not run a mounted app's lifespan: the outer app runs it (README "Security").
    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with app.router.lifespan_context(app):
            yield

    return Starlette(routes=[Mount("/chat", app=SeenTenant(app))], lifespan=lifespan)


def start_shape(name: str, settings: Settings, stack: ExitStack) -> Shape:
    app = create_app(settings)
    if name == "root":
        server = stack.enter_context(ServedApp(SeenTenant(app)))
        return Shape(name, server.base_url, settings.key_prefix)
    if name == "root-path":
        server = stack.enter_context(ServedApp(SeenTenant(app), root_path="/chat"))
        return Shape(name, server.base_url, settings.key_prefix)
    if name == "mounted":
        server = stack.enter_context(ServedApp(mounted(app)))
        return Shape(name, f"{server.base_url}/chat", settings.key_prefix)
    # Behind a proxy that strips /chat: with --root-path /chat (as FastAPI's docs advise, so
    # the app knows its public prefix) and without.
    root_path = "/chat" if name == "proxy+root-path" else ""
    server = stack.enter_context(ServedApp(SeenTenant(app), root_path=root_path))
    proxy = stack.enter_context(StripProxy("/chat", server.port))
    return Shape(name, proxy.base_url, settings.key_prefix)


SHAPES = ["root", "root-path", "mounted", "proxy", "proxy+root-path"]


@pytest.fixture(scope="module", params=SHAPES)
def shape(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Shape]:
    settings = Settings(redis_url=redis_server.url, key_prefix=new_prefix(), **KEY_SETTINGS)  # type: ignore[arg-type]
    with ExitStack() as stack:
        yield start_shape(request.param, settings, stack)


@pytest.fixture
async def redis_bytes(redis_server: RedisServer) -> AsyncIterator[Redis]:
    r = Redis.from_url(redis_server.url)
    yield r
    await r.aclose()


async def snapshot(r: Redis, prefix: str) -> dict[bytes, bytes | None]:
    """Every key under ``prefix`` with its serialized value: a write to any of them shows."""
    keys = [k async for k in r.scan_iter(match=f"{prefix}:*", count=1000)]
    return {k: await r.dump(k) for k in keys}


def bearer(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def assert_refused(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, (resp.request.url, resp.text)
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["code"] == code and resp.json()["message"]
    assert SEEN not in resp.headers, "a refused request reached the app with a tenant"
    if status == 401:
        assert resp.headers["www-authenticate"] == "Bearer"


REFUSED_CREDENTIALS = {
    "no key": {},
    "wrong key": bearer("not-a-key"),
    "basic scheme": {"Authorization": f"Basic {ALPHA_KEY}"},
    "empty bearer": {"Authorization": "Bearer"},
    # A hashed entry's hex is not itself a key.
    "the hash of a key": bearer(sha256_hex(BETA_KEY)),
    "the hash entry as written": bearer(f"sha256:{sha256_hex(BETA_KEY)}"),
    "a tenant header alone": {"X-Chatlane-Tenant": "alpha"},
    "a key of another case": bearer(ALPHA_KEY.upper()),
}


@pytest.mark.parametrize("credentials", REFUSED_CREDENTIALS, ids=list(REFUSED_CREDENTIALS))
async def test_no_key_or_a_wrong_key_gets_401_and_writes_nothing(
    shape: Shape, credentials: str, redis_bytes: Redis
) -> None:
    s = sid()
    tid = "a" * 32
    async with httpx.AsyncClient(base_url=shape.base, headers=REFUSED_CREDENTIALS[credentials], timeout=10) as h:
        before = await snapshot(redis_bytes, shape.prefix)
        for resp in [
            await h.post(f"/v1/sessions/{s}/turns", json={"text": "hi"}),
            # Checked before the body is read: a broken body still gets 401.
            await h.post(f"/v1/sessions/{s}/turns", content=b"{not json"),
            await h.get(f"/v1/turns/{tid}"),
            await h.get(f"/v1/turns/{tid}/stream"),
            await h.post(f"/v1/turns/{tid}/cancel"),
            await h.get(f"/v1/sessions/{s}/messages"),
            await h.get(f"/v1/sessions/{s}/export"),
            await h.delete(f"/v1/sessions/{s}"),
            # Deny by default: unknown paths, and paths next to the public ones, are not public.
            await h.get("/v1/nowhere"),
            await h.get("/nowhere"),
            await h.get("/healthz/"),
            await h.get("/metricsx"),
            await h.get("/docs/x"),
            await h.get("/chat/v1/turns/" + tid),
        ]:
            assert_refused(resp, 401, "unauthorized")
        assert await snapshot(redis_bytes, shape.prefix) == before
        # The probes, the schema and the docs need no key, in every shape.
        for path in ("/healthz", "/openapi.json", "/docs", "/metrics", "/ui", "/docs/assets/swagger-ui.css"):
            assert (await h.get(path)).status_code == 200, path


async def test_a_tenant_key_acts_for_its_tenant_and_an_admin_key_for_the_named_one(
    shape: Shape, redis_bytes: Redis
) -> None:
    s = sid()
    async with httpx.AsyncClient(base_url=shape.base, timeout=10) as h:
        before = await snapshot(redis_bytes, shape.prefix)
        made = await h.post(f"/v1/sessions/{s}/turns", json={"text": "hi"}, headers=bearer(ALPHA_KEY))
        assert made.status_code == 202, made.text
        assert made.headers[SEEN] == "alpha"
        assert await snapshot(redis_bytes, shape.prefix) != before  # the turn was written
        tid = made.json()["turn_id"]
        mine = await h.get(f"/v1/turns/{tid}", headers=bearer(ALPHA_KEY, **{"X-Chatlane-Tenant": "alpha"}))
        assert (mine.status_code, mine.headers[SEEN], mine.json()["turn_id"]) == (200, "alpha", tid)

        # beta's key (configured only as its hash) is accepted and acts for beta. That beta then
        # gets 404 for alpha's turn is test_another_tenants_turn_is_404 (and t-space's isolation tests).
        other = await h.get(f"/v1/sessions/{s}/messages", headers=bearer(BETA_KEY))
        assert (other.status_code, other.headers[SEEN]) == (200, "beta")

        # An admin key acts for the tenant it names.
        for tenant in ("alpha", "beta", "gamma"):
            resp = await h.get(f"/v1/sessions/{s}/messages", headers=bearer(ADMIN_KEY, **{"X-Chatlane-Tenant": tenant}))
            assert (resp.status_code, resp.headers[SEEN]) == (200, tenant)
        as_alpha = await h.get(f"/v1/turns/{tid}", headers=bearer(ADMIN_KEY, **{"X-Chatlane-Tenant": "alpha"}))
        assert (as_alpha.status_code, as_alpha.json()["turn_id"]) == (200, tid)

        # Refused without reaching a route, nothing written: an admin key that names no tenant or
        # a malformed one, and a tenant key that names another tenant.
        before = await snapshot(redis_bytes, shape.prefix)
        for headers, status, code in [
            (bearer(ADMIN_KEY), 422, "invalid_input"),
            (bearer(ADMIN_KEY, **{"X-Chatlane-Tenant": "Not A Tenant"}), 422, "invalid_input"),
            (bearer(ADMIN_KEY, **{"X-Chatlane-Tenant": ""}), 422, "invalid_input"),
            (bearer(BETA_KEY, **{"X-Chatlane-Tenant": "alpha"}), 403, "forbidden"),
            (bearer(ALPHA_KEY, **{"X-Chatlane-Tenant": "beta"}), 403, "forbidden"),
        ]:
            assert_refused(await h.post(f"/v1/sessions/{s}/turns", json={"text": "x"}, headers=headers), status, code)
        assert await snapshot(redis_bytes, shape.prefix) == before


async def test_another_tenants_turn_is_404(shape: Shape) -> None:
    async with httpx.AsyncClient(base_url=shape.base, timeout=10) as h:
        made = await h.post(f"/v1/sessions/{sid()}/turns", json={"text": "hi"}, headers=bearer(ALPHA_KEY))
        tid = made.json()["turn_id"]
        resp = await h.get(f"/v1/turns/{tid}", headers=bearer(BETA_KEY))
        assert resp.status_code == 404, resp.text
        assert (resp.json()["code"], resp.headers[SEEN]) == ("turn_not_found", "beta")


# Closed by default.


async def test_no_keys_configured_refuses_every_v1_route_and_says_how_to_open_it(
    redis_server: RedisServer, redis_bytes: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(redis_url=redis_server.url, key_prefix=new_prefix())
    with caplog.at_level(logging.WARNING, logger="chatlane.api"), ServedApp(SeenTenant(create_app(settings))) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as h:
            for headers in ({}, bearer("any-key")):
                resp = await h.post(f"/v1/sessions/{sid()}/turns", json={"text": "hi"}, headers=headers)
                assert_refused(resp, 401, "unauthorized")
                message = resp.json()["message"]
                assert "CHATLANE_API_KEYS" in message and "CHATLANE_AUTH=none" in message
            assert_refused(await h.get(f"/v1/turns/{'a' * 32}"), 401, "unauthorized")
            assert (await h.get("/healthz")).status_code == 200
    assert await snapshot(redis_bytes, settings.key_prefix) == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "no API keys configured" in w]) == 1, warnings
    assert all("\n" not in w for w in warnings)


async def test_auth_none_serves_everyone_as_the_default_tenant(redis_server: RedisServer) -> None:
    settings = Settings(redis_url=redis_server.url, key_prefix=new_prefix(), auth="none")
    with ServedApp(SeenTenant(create_app(settings))) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as h:
            resp = await h.post(f"/v1/sessions/{sid()}/turns", json={"text": "hi"})
            assert (resp.status_code, resp.headers[SEEN]) == (202, "default")
            spec = (await h.get("/openapi.json")).json()
            assert "securitySchemes" not in spec.get("components", {})


def test_a_bare_key_belongs_to_the_default_tenant() -> None:
    # As configured before tenants, a trailing comma included.
    ring = load_keyring(Settings(api_keys=SecretStr(f"old-key, sha256:{sha256_hex('other')},")))
    assert ring is not None
    grants = [ring.grant(k) for k in (b"old-key", b"other", b"nope")]
    assert [g.tenant if g else None for g in grants] == ["default", "default", None]


# The key file and the configuration errors.

KEY_FILE = f"""\
# tenants of the staging API
acme=sha256:{sha256_hex("acme-1")}   max_queued=100 turns_per_min=60
acme=acme-2                          # a second key while acme rotates
globex=globex#1                      # '#' inside a key is part of it
initech=sha256:{sha256_hex("initech-1").upper()} turns_per_min=0

bare-key-of-default
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "keys.txt"
    path.write_text(text)
    return str(path)


def test_key_file_entries_quotas_and_comments(tmp_path: Path) -> None:
    ring = load_keyring(Settings(api_keys_file=write(tmp_path, KEY_FILE), admin_keys=SecretStr("sha256:" + "0" * 64)))
    assert ring is not None
    tenants = {k: ring.grant(k.encode()) for k in ("acme-1", "acme-2", "globex#1", "initech-1", "bare-key-of-default")}
    assert {k: g.tenant if g else None for k, g in tenants.items()} == {
        "acme-1": "acme",
        "acme-2": "acme",
        "globex#1": "globex",
        "initech-1": "initech",
        "bare-key-of-default": "default",
    }
    assert ring.grant(b"globex") is None
    assert ring.quotas == {
        "acme": TenantQuota(max_queued=100, turns_per_min=60),
        "initech": TenantQuota(turns_per_min=0),
    }
    admin = ring.grants[bytes(32)]
    assert admin.admin


async def test_key_file_and_hashed_keys_over_http(tmp_path: Path, redis_server: RedisServer) -> None:
    settings = Settings(redis_url=redis_server.url, key_prefix=new_prefix(), api_keys_file=write(tmp_path, KEY_FILE))
    app = create_app(settings)
    assert app.state.tenant_quotas == {
        "acme": TenantQuota(max_queued=100, turns_per_min=60),
        "initech": TenantQuota(turns_per_min=0),
    }
    with ServedApp(SeenTenant(app)) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as h:
            for key, tenant in [
                ("acme-1", "acme"),
                ("acme-2", "acme"),
                ("globex#1", "globex"),
                ("initech-1", "initech"),
            ]:
                resp = await h.post(f"/v1/sessions/{sid()}/turns", json={"text": "hi"}, headers=bearer(key))
                assert (resp.status_code, resp.headers[SEEN]) == (202, tenant), key
            for key in (sha256_hex("acme-1"), "globex", "acme"):
                assert_refused(await h.get(f"/v1/sessions/{sid()}/messages", headers=bearer(key)), 401, "unauthorized")


SECRET = "s3cret-value"
BAD_CONFIGS: list[tuple[dict[str, object], str]] = [
    ({"api_keys": f"Acme={SECRET}"}, "CHATLANE_API_KEYS entry 1: the text before '=' is not a tenant name"),
    ({"api_keys": f"ok={SECRET}, bad tenant={SECRET}2"}, "CHATLANE_API_KEYS entry 2: the text before '='"),
    ({"api_keys": "acme=sha256:abc"}, "must be followed by 64 hex digits"),
    ({"api_keys": "acme=sha256:" + "g" * 64}, "must be followed by 64 hex digits"),
    ({"api_keys": f"a={SECRET}, b={SECRET}"}, "CHATLANE_API_KEYS entry 2: the same key as CHATLANE_API_KEYS entry 1"),
    ({"api_keys": f"a={SECRET}", "admin_keys": f"sha256:{sha256_hex(SECRET)}"},
     "CHATLANE_ADMIN_KEYS entry 1: the same key"),
    ({"api_keys": "a="}, "the key is empty"),
    ({"api_keys_file": "/nonexistent/keys.txt"}, "CHATLANE_API_KEYS_FILE: cannot read /nonexistent/keys.txt"),
    ({"auth": "none", "api_keys": SECRET}, "CHATLANE_AUTH=none turns auth off, but CHATLANE_API_KEYS is set"),
]  # fmt: skip
FILE_ERRORS = [
    (f"a={SECRET} max_queued=-1", "line 1: max_queued must be a whole number"),
    (f"a={SECRET} burst=5", "line 1: word 2 is not a quota; expected max_queued=N, turns_per_min=N"),
    (f"a=k1 {SECRET}", "line 1: word 2 is not a quota"),
    (f"a={SECRET} max_queued=\u00b2", "line 1: max_queued must be a whole number"),
    (f"a={SECRET} max_queued=1 max_queued=2", "line 1: max_queued is given twice"),
    (f"a={SECRET} max_queued=1\na={SECRET}2 max_queued=2", "line 2: max_queued of tenant a differs from"),
    (f"# ok\n\na={SECRET}\nb={SECRET}", "line 4: the same key as CHATLANE_API_KEYS_FILE"),
]


@pytest.mark.parametrize(("config", "expected"), BAD_CONFIGS)
def test_key_configuration_mistakes_fail_app_creation_in_one_line(config: dict[str, object], expected: str) -> None:
    with pytest.raises(ApiKeysError) as err:
        create_app(Settings(**config))  # type: ignore[arg-type]
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert SECRET not in message  # a key is never echoed


@pytest.mark.parametrize(("text", "expected"), FILE_ERRORS)
def test_key_file_mistakes_name_the_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ApiKeysError) as err:
        load_keyring(Settings(api_keys_file=write(tmp_path, text)))
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert SECRET not in str(err.value)


# The README's Security snippets, as written: the key maker's entry is the key file of an app
# mounted as the README shows, served by uvicorn in its own process.

README = Path(__file__).resolve().parents[2] / "README.md"


def security_blocks(lang: str) -> list[str]:
    text = README.read_text()
    section = text[text.index("\n## Security\n") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(rf"^```{lang}\n(.*?)^```", section, re.S | re.M)


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="sha256sum is not installed")
def test_readme_security_snippets_run_as_written(tmp_path: Path, redis_server: RedisServer) -> None:
    [make_key] = security_blocks("sh")
    made = subprocess.run(["bash", "-euc", make_key], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    key = made.stdout.split("the key for acme: ", 1)[1].split()[0]
    [mount] = security_blocks("python")
    (tmp_path / "mounted_app.py").write_text(mount)
    prefix = new_prefix()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path.cwd())]),
        "CHATLANE_REDIS_URL": redis_server.url,
        "CHATLANE_KEY_PREFIX": prefix,
        "CHATLANE_API_KEYS_FILE": str(tmp_path / "api-keys"),
    }
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "mounted_app:app", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/chat"
    try:
        with httpx.Client(base_url=base, timeout=10) as h, SyncRedis.from_url(redis_server.url) as r:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    if h.get("/healthz").status_code == 200:
                        break
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                time.sleep(0.05)
            turn = {"text": "hi"}
            assert_refused(h.post(f"/v1/sessions/{sid()}/turns", json=turn), 401, "unauthorized")
            assert not list(r.scan_iter(match=f"{prefix}:*"))
            made_turn = h.post(f"/v1/sessions/{sid()}/turns", json=turn, headers=bearer(key))
            assert made_turn.status_code == 202, made_turn.text
            assert list(r.scan_iter(match=f"{prefix}:*"))
    finally:
        server.terminate()
        server.wait(10)
