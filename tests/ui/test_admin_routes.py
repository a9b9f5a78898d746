"""The dashboard's /v1 routes (fleet, failed turns, retry) and the static files behind /ui and
/docs, over HTTP: real API, real workers, real Redis."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import httpx

from tests.conftest import sid
from tests.ui.conftest import UiApi, client, wait_state

REPO = Path(__file__).resolve().parents[2]


def test_admin_routes_want_the_key(ui_api: UiApi) -> None:
    with httpx.Client(base_url=ui_api.url) as anon:
        for method, path in [
            ("GET", "/v1/fleet"),
            ("GET", "/v1/fleet/failed"),
            ("POST", f"/v1/turns/{'0' * 32}/retry"),
        ]:
            r = anon.request(method, path)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["code"] == "unauthorized"


def test_fleet_counts_workers_and_turns_that_ended(ui_api: UiApi) -> None:
    with client(ui_api) as c:
        turn = c.post(f"/v1/sessions/{sid('ui-rate')}/turns", json={"text": "count me !delay=0"}).json()["turn_id"]
        assert wait_state(c, turn, "completed")["state"] == "completed"
        fleet = c.get("/v1/fleet", params={"window_s": 60}).json()
        assert fleet["workers_alive"] >= 1
        assert fleet["window_s"] == 60
        assert set(fleet["ended"]) == {"completed", "failed", "cancelled", "interrupted", "expired"}
        assert fleet["ended"]["completed"] >= 1
        assert isinstance(fleet["counters"], dict)
        for bad in ("0", "86401", "x"):
            r = c.get("/v1/fleet", params={"window_s": bad})
            assert r.status_code == 422 and r.json()["code"] == "invalid_input"


def test_failed_lists_failed_turns_and_retry_makes_a_new_one(ui_api: UiApi) -> None:
    session = sid("ui-retry")
    with client(ui_api) as c:
        failed = c.post(f"/v1/sessions/{session}/turns", json={"text": "fails !fail"}).json()["turn_id"]
        assert wait_state(c, failed, "failed")["state"] == "failed"
        listed = [t["turn_id"] for t in c.get("/v1/fleet/failed", params={"since": 600}).json()["turns"]]
        assert failed in listed
        # Nothing failed in the future: a window of 0 s back lists none of the earlier ones.
        assert failed not in [t["turn_id"] for t in c.get("/v1/fleet/failed", params={"since": 0}).json()["turns"]]
        for bad in ("-1", "1e308", "x"):
            r = c.get("/v1/fleet/failed", params={"since": bad})
            assert r.status_code == 422 and r.json()["code"] == "invalid_input"

        r = c.post(f"/v1/turns/{failed}/retry")
        assert r.status_code == 202, r.text
        body = r.json()
        new = body["turn"]["turn_id"]
        assert body["retry_of"] == failed and body["created"] is True and new != failed
        assert r.headers["Location"] == f"/v1/turns/{new}"
        assert body["turn"]["session_id"] == session and body["turn"]["text"] == "fails !fail"

        done = c.post(f"/v1/sessions/{session}/turns", json={"text": "fine !delay=0"}).json()["turn_id"]
        assert wait_state(c, done, "completed")["state"] == "completed"
        r = c.post(f"/v1/turns/{done}/retry")
        assert r.status_code == 409 and r.json()["code"] == "turn_not_retryable"
        r = c.post(f"/v1/turns/{'f' * 32}/retry")
        assert r.status_code == 404 and r.json()["code"] == "turn_not_found"
        r = c.post("/v1/turns/not-a-turn/retry")  # any shape: no such turn (tests/http/test_hardening.py)
        assert r.status_code == 404 and r.json()["code"] == "turn_not_found"


def test_openapi_documents_the_admin_routes(ui_api: UiApi) -> None:
    spec = httpx.get(f"{ui_api.url}/openapi.json").json()
    fleet = spec["paths"]["/v1/fleet"]["get"]
    retry = spec["paths"]["/v1/turns/{turn_id}/retry"]["post"]
    assert {"200", "401", "422", "503"} <= set(fleet["responses"])
    assert {"200", "202", "401", "404", "409", "422", "429", "503"} <= set(retry["responses"])
    assert retry["security"] == [{"bearer": []}]
    assert "/v1/fleet/failed" in spec["paths"]
    # The static pages are not API operations.
    assert not any(p.startswith(("/ui", "/docs")) for p in spec["paths"])


def test_static_pages_are_served_without_a_key_and_redoc_is_off(ui_api: UiApi) -> None:
    with httpx.Client(base_url=ui_api.url) as anon:
        page = anon.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "/ui/assets/app.js" in page.text
        slash = anon.get("/ui/")
        assert slash.status_code == 308 and slash.headers["location"] == "/ui"
        for asset in ("/ui/assets/app.js", "/ui/assets/app.css", "/docs/assets/swagger-ui-bundle.js"):
            assert anon.get(asset).status_code == 200, asset
        docs = anon.get("/docs")
        assert docs.status_code == 200 and "/docs/assets/swagger-ui.css" in docs.text
        assert "cdn" not in docs.text.lower()
        # Refused like any path that is not public; with the key, there is no such page.
        assert anon.get("/redoc").status_code == 401
    with client(ui_api) as c:
        assert c.get("/redoc").status_code == 404


def test_package_data_ships_every_static_file() -> None:
    """An installed (not editable) package serves /ui and /docs only if pyproject's package-data
    names their files."""
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["producer"]
    root = REPO / "producer"
    files = [p.relative_to(root).as_posix() for d in ("ui", "static") for p in (root / d).rglob("*") if p.is_file()]
    assert files
    missing = [f for f in files if not any(fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns)]
    assert missing == []
