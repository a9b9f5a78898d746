"""The dashboard at /ui and the docs at /docs in a real browser (Debian's Chromium): real API, real
workers (fake model, slowed down), real Redis. No request may leave this machine."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Page, expect

from devkit.ui_screenshot import enter_key, send
from producer.ui_routes import is_public
from tests.conftest import sid
from tests.ui.conftest import LOCAL_HOSTS, Offsite, UiApi, client, wait_state

# Records every text the live stream showed while its turn was running, in order: what a person
# watching the page saw, however fast the test looks.
WATCH_STREAM = """() => {
  window.__seen = [];
  const stream = document.querySelector('#stream');
  new MutationObserver(() => {
    const text = document.querySelector('#stream-text').textContent;
    const seen = window.__seen;
    if (stream.dataset.state === 'running' && text && seen[seen.length - 1] !== text) seen.push(text);
  }).observe(stream, {subtree: true, childList: true, characterData: true, attributes: true});
}"""

RUNNING_WITH_TEXT = """(previous) => {
  const s = document.querySelector('#stream');
  const text = document.querySelector('#stream-text').textContent;
  return s.dataset.state === 'running' && s.dataset.turn !== previous && text.length > 0 ? s.dataset.turn : null;
}"""


def test_docs_render_from_local_files_with_no_request_leaving_the_machine(
    page: Page, ui_api: UiApi, offsite: Offsite
) -> None:
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(f"{ui_api.url}/docs")
    # Rendered by Swagger UI's script from /openapi.json: title and operations.
    expect(page.locator("#swagger-ui .info .title")).to_contain_text("chatlane")
    expect(page.locator("#swagger-ui .opblock-summary-path[data-path='/v1/fleet']")).to_be_visible()
    assert offsite.urls == []
    assert f"{ui_api.url}/docs/assets/swagger-ui-bundle.js" in requested
    assert f"{ui_api.url}/docs/assets/swagger-ui.css" in requested
    assert all(urlsplit(u).hostname in LOCAL_HOSTS for u in requested if not u.startswith("data:"))
    # Besides the OpenAPI document, the page needs only what a deny-by-default auth lets through.
    paths = {urlsplit(u).path for u in requested if not u.startswith("data:")} - {"/openapi.json"}
    assert all(is_public(p) for p in paths), paths


def test_fleet_view_asks_for_the_key_once_and_shows_the_workers(page: Page, ui_api: UiApi, offsite: Offsite) -> None:
    requested: list[str] = []
    page.on("request", lambda r: requested.append(urlsplit(r.url).path))
    page.goto(f"{ui_api.url}/ui")
    expect(page.locator("#key-form")).to_be_visible()
    page.locator("#key-input").fill("not-the-key")
    page.locator("#key-submit").click()
    expect(page.locator("#key-prompt")).to_contain_text("refused")
    enter_key(page, "ui-key")
    page.wait_for_function("() => Number(document.querySelector('#workers').textContent) >= 1")
    assert int(page.locator("#workers").inner_text()) >= 1
    assert page.locator("#counters tbody tr").count() >= 0  # rendered (the hash may still be empty)
    expect(page.locator("#ended tbody tr")).to_have_count(5)  # every ended state, zeros too
    # Kept for the tab only; a reload does not ask again.
    assert page.evaluate("sessionStorage.getItem('chatlane.key')") == "ui-key"
    assert page.evaluate("localStorage.length") == 0
    page.reload()
    page.wait_for_function("() => Number(document.querySelector('#workers').textContent) >= 1")
    expect(page.locator("#key-form")).to_be_hidden()
    assert offsite.urls == []
    # The page's own files are public; every piece of data came from /v1, behind the key.
    assert {p for p in requested if not is_public(p)} <= {"/v1/fleet", "/v1/fleet/failed"}, requested


def test_dashboard_needs_no_key_when_auth_is_off(page: Page, open_api: UiApi) -> None:
    page.goto(f"{open_api.url}/ui")
    expect(page.locator("#workers")).to_have_text("0")  # no workers behind this API
    expect(page.locator("#key-form")).to_be_hidden()
    expect(page.locator("#error")).to_be_hidden()


def test_session_view_sends_streams_shows_history_and_stops(
    page: Page, ui_api: UiApi, offsite: Offsite, tmp_path: Path
) -> None:
    session = sid("ui")
    page.goto(f"{ui_api.url}/ui#/session/{session}")
    enter_key(page, "ui-key")
    expect(page.locator("#session-body")).to_be_visible()
    page.evaluate(WATCH_STREAM)

    send(page, "hello from the browser")
    turn = page.wait_for_function(RUNNING_WITH_TEXT, arg="").json_value()
    page.screenshot(path=str(tmp_path / "mid-stream.png"))
    stream = page.locator("#stream")
    expect(stream).to_have_attribute("data-state", "completed")
    final = page.locator("#stream-text").inner_text()

    with client(ui_api) as c:
        st = c.get(f"/v1/turns/{turn}").json()
    assert st["state"] == "completed"
    assert st["reply"] == final and final.startswith("Reply #1 to 'hello from the browser'")
    # The reply appeared piece by piece while the turn ran: growing prefixes of the final reply.
    seen: list[str] = page.evaluate("window.__seen")
    assert len(seen) >= 2, seen
    assert all(final.startswith(t) for t in seen), (seen, final)
    assert all(len(a) < len(b) for a, b in pairwise(seen)), seen

    # The history shows both messages once the turn has committed.
    expect(page.locator("#history li.msg")).to_have_count(2)
    expect(page.locator("#history li.msg.user .content")).to_have_text("hello from the browser")
    expect(page.locator("#history li.msg.assistant .content")).to_have_text(final)

    # A long reply, stopped from the page: it ends interrupted with the text so far kept.
    send(page, "now something long !delay=24000")
    long_turn = page.wait_for_function(RUNNING_WITH_TEXT, arg=turn).json_value()
    expect(page.locator(f"#live-turns li[data-turn='{long_turn}']")).to_have_attribute("data-state", "running")
    page.locator("#stop").click()
    expect(stream).to_have_attribute("data-state", "interrupted")
    partial = page.locator("#stream-text").inner_text()
    with client(ui_api) as c:
        st = c.get(f"/v1/turns/{long_turn}").json()
    assert st["state"] == "interrupted"
    assert st["reply"] == partial and partial.startswith("Reply #2")
    expect(page.locator("#history li.msg")).to_have_count(4)
    expect(page.locator("#history li.msg.assistant .content").last).to_have_text(partial)
    expect(page.locator("#live-turns li")).to_have_count(0)
    expect(page.locator("#error")).to_be_hidden()
    assert offsite.urls == []


def test_fleet_view_retries_a_failed_turn(page: Page, ui_api: UiApi, offsite: Offsite) -> None:
    session = sid("ui-fail")
    with client(ui_api) as c:
        failed = c.post(f"/v1/sessions/{session}/turns", json={"text": "this one fails !fail"}).json()["turn_id"]
        assert wait_state(c, failed, "failed")["state"] == "failed"

    page.goto(f"{ui_api.url}/ui#/fleet")
    enter_key(page, "ui-key")
    row = page.locator(f"#failed tr[data-turn='{failed}']")
    expect(row).to_contain_text("this one fails !fail")
    row.locator("button.retry").click()
    link = row.locator("a.retried")
    expect(link).to_be_visible()
    new = link.get_attribute("data-new-turn")
    assert new and new != failed

    with client(ui_api) as c:
        st = c.get(f"/v1/turns/{new}").json()
        assert st["session_id"] == session and st["text"] == "this one fails !fail"
        # The page's retry is the API's: repeating it returns the same new turn.
        again = c.post(f"/v1/turns/{failed}/retry")
        assert again.status_code == 200 and again.json()["turn"]["turn_id"] == new
    # The link opens the session with the new turn.
    link.click()
    expect(page.locator("#session-input")).to_have_value(session)
    assert offsite.urls == []


def test_history_and_stream_show_tool_calls_and_results(page: Page, ui_api: UiApi) -> None:
    session = sid("ui-tools")
    page.goto(f"{ui_api.url}/ui#/session/{session}")
    enter_key(page, "ui-key")
    send(page, 'what is a lease? !tool=lookup:{"term": "lease"}')
    stream = page.locator("#stream")
    expect(stream).to_have_attribute("data-state", "completed")
    # The stream showed the agent's tool call and its result as they happened.
    expect(page.locator("#stream-tools li")).to_have_text(["calls lookup", "result of lookup"])

    with client(ui_api) as c:
        messages = c.get(f"/v1/sessions/{session}/messages").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    call_id = messages[1]["tool_calls"][0]["id"]
    expect(page.locator("#history li.msg")).to_have_count(4)
    call = page.locator("#history li.msg.assistant .call")
    expect(call).to_have_count(1)
    expect(call).to_contain_text('calls lookup({"term":"lease"})')
    expect(call).to_contain_text(call_id)
    result = page.locator("#history li.msg.tool")
    expect(result.locator(".meta")).to_contain_text(f"lookup → call {call_id}")
    expect(result.locator(".content")).to_have_text(messages[2]["content"])


def test_queued_turn_is_cancelled_from_the_list(page: Page, ui_api: UiApi) -> None:
    session = sid("ui-cancel")
    page.goto(f"{ui_api.url}/ui#/session/{session}")
    enter_key(page, "ui-key")
    send(page, "a slow one !delay=24000")
    running = page.wait_for_function(RUNNING_WITH_TEXT, arg="").json_value()
    send(page, "and one behind it")
    queued = page.locator("#live-turns li[data-state='queued']")
    expect(queued).to_have_count(1)
    queued_id = queued.get_attribute("data-turn")
    queued.get_by_role("button", name="Cancel").click()
    expect(page.locator(f"#live-turns li[data-turn='{queued_id}']")).to_have_count(0)
    with client(ui_api) as c:
        assert c.get(f"/v1/turns/{queued_id}").json()["state"] == "cancelled"
        assert c.get(f"/v1/turns/{running}").json()["state"] == "running"  # untouched
    # The running turn's own Stop in the list ends it too.
    page.locator(f"#live-turns li[data-turn='{running}']").get_by_role("button", name="Stop").click()
    expect(page.locator("#stream")).to_have_attribute("data-state", "interrupted")
    expect(page.locator("#live-turns li")).to_have_count(0)


def test_an_admin_key_acts_for_the_tenant_named_with_it(page: Page, tenant_api: UiApi, offsite: Offsite) -> None:
    """An admin key without a tenant is asked for one (the API refuses it 422); with one, what the
    page sends lands in that tenant's session, which another tenant does not see. A session id like
    an e-mail address opens as the API accepts it."""
    session = f"{sid('ui')}@example.com"
    page.goto(f"{tenant_api.url}/ui#/session/{session}")
    expect(page.locator("#key-form")).to_be_visible()
    page.locator("#key-input").fill("admin-key")  # no tenant: the form comes back at once
    page.locator("#key-submit").click()
    expect(page.locator("#key-prompt")).to_contain_text("X-Chatlane-Tenant")
    expect(page.locator("#key-form")).to_be_visible()
    page.locator("#key-input").fill("admin-key")
    page.locator("#tenant-input").fill("acme")
    page.locator("#key-submit").click()
    expect(page.locator("#key-form")).to_be_hidden()
    expect(page.locator("#key-state")).to_have_text("key set · tenant acme")
    expect(page.locator("#session-body")).to_be_visible()

    send(page, "hello as acme")
    expect(page.locator("#stream")).to_have_attribute("data-state", "completed")
    expect(page.locator("#history li.msg")).to_have_count(2)
    with client(tenant_api) as acme:
        messages = acme.get(f"/v1/sessions/{session}/messages").json()["messages"]
        assert messages[0]["content"] == "hello as acme"
    other = httpx.Client(base_url=tenant_api.url, headers={"Authorization": "Bearer other-key"}, timeout=10)
    with other:
        assert other.get(f"/v1/sessions/{session}/messages").json()["messages"] == []

    # A tenant key naming another tenant is refused (403) and asked again; the key alone works.
    page.locator("#forget-key").click()
    page.reload()
    page.locator("#key-input").fill("other-key")
    page.locator("#tenant-input").fill("acme")
    page.locator("#key-submit").click()
    expect(page.locator("#key-prompt")).to_contain_text("only an admin key may name another tenant")
    page.locator("#tenant-input").fill("")
    enter_key(page, "other-key")
    expect(page.locator("#key-state")).to_have_text("key set")
    expect(page.locator("#history-count")).to_have_text("0 message(s)")  # other's session of that name
    assert offsite.urls == []
