"""Debian's Chromium under Playwright, and the README's dashboard screenshot (docs/ui.png).

``python -m devkit.ui_screenshot [PATH]`` starts a private Redis, two workers on the fake model
(slowed down so the stream is visibly live), the API with a key, and Chromium; it opens a session in
/ui, has two turns answered, sends two more and saves the page while the first of them streams.

The browser is /usr/bin/chromium (``apt-get install chromium``), never one that Playwright
downloads: the machine reaches no host but the package registries. tests/ui launches it the same way.
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing of Chromium's own phoning home (updates, sync, field trials): a page's
# requests are then only the ones it makes.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # runs as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "screenshot-key"
REPO = Path(__file__).resolve().parent.parent


def launch_chromium(pw: Playwright) -> Browser:
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


def enter_key(page: Page, key: str) -> None:
    """Answer the dashboard's key prompt (it appears on the first 401)."""
    page.locator("#key-input").fill(key)
    page.locator("#key-submit").click()
    expect(page.locator("#key-form")).to_be_hidden()


def send(page: Page, text: str) -> None:
    page.locator("#send-text").fill(text)
    page.locator("#send").click()


@contextmanager
def demo_stack(delay_ms: int) -> Iterator[str]:
    """Redis, two fake-model workers and the API (key ``API_KEY``); yields the API's URL."""
    from pydantic import SecretStr

    from devkit.api_server import ServedApp
    from devkit.processes import WorkerProcess, worker_env
    from devkit.redis_server import RedisServer
    from producer import Settings
    from producer.api import create_app

    prefix = f"ui{uuid.uuid4().hex[:8]}"
    with RedisServer() as redis, tempfile.TemporaryDirectory(prefix="chatlane-ui-") as logs:
        env = worker_env(redis.url, prefix, {"CHATLANE_FAKE_DELAY_MS": str(delay_ms)})
        workers = [WorkerProcess(env, Path(logs) / f"worker{i}.log").start() for i in range(2)]
        try:
            settings = Settings(redis_url=redis.url, key_prefix=prefix, api_keys=SecretStr(API_KEY))
            with ServedApp(create_app(settings)) as server:
                yield server.base_url
        finally:
            for w in workers:
                w.stop()


def screenshot(path: Path, delay_ms: int = 3000) -> None:
    with demo_stack(delay_ms) as url, sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 500})
        page.goto(f"{url}/ui#/session/support-4711")
        enter_key(page, API_KEY)
        for n, text in enumerate(["Hi! Which plans do you offer?", "Is there a discount for nonprofits?"], 1):
            send(page, text)
            expect(page.locator("#history li.msg.assistant")).to_have_count(n, timeout=30_000)
        send(page, "And what does the team plan cost per seat?")
        send(page, "Can I pay yearly?")  # queued behind the running turn
        # Mid-stream: part of the reply shown, the turn still running.
        page.wait_for_function(
            "() => document.querySelector('#stream').dataset.state === 'running'"
            " && document.querySelector('#stream-text').textContent.length > 40",
            timeout=30_000,
        )
        page.screenshot(path=str(path))
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", type=Path, default=REPO / "docs" / "ui.png")
    args = ap.parse_args()
    screenshot(args.path)
    print(f"wrote {args.path}")


if __name__ == "__main__":
    main()
