"""Webhooks: signed (Standard Webhooks), retried with backoff, at least once with a stable id,
only to allowed hosts, and never on a session's path."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from standardwebhooks import Webhook

from chatlane.errors import WebhookNotAllowed
from devkit.redis_server import free_port
from producer import ChatProducer, TurnState
from tests.conftest import Fleet, sid, wait_async

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


class Receiver:
    """A webhook receiver on loopback: answers ``codes`` in turn (then 200), after ``delay_s``."""

    def __init__(self, codes: list[int], delay_s: float = 0.0) -> None:
        self.codes = list(codes)
        self.delay_s = delay_s
        self.calls: list[tuple[float, dict[str, str], str, int]] = []
        self.port = free_port()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                time.sleep(outer.delay_s)
                code = outer.codes.pop(0) if outer.codes else 200
                outer.calls.append((time.monotonic(), dict(self.headers.items()), body, code))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/chat"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


HOOK_ENV = {"webhook_secret": SECRET, "webhook_allow_hosts": "127.0.0.1", "webhook_backoff_s": 0.5}


@pytest.fixture
async def hooked(fleet: Fleet) -> Iterator[ChatProducer]:
    settings = fleet.settings.model_copy(
        update={"webhook_secret": SecretStr(SECRET), "webhook_allow_hosts": "127.0.0.1"}
    )
    async with ChatProducer(settings=settings) as p:
        yield p  # type: ignore[misc]


async def test_failing_receiver_gets_one_accepted_delivery_signed_with_a_stable_id(
    fleet: Fleet, hooked: ChatProducer
) -> None:
    with Receiver([500, 503]) as rx:
        fleet.start(1, **HOOK_ENV)
        s = sid("hook")
        t = await hooked.enqueue(s, "call me back", webhook_url=rx.url)
        done = await hooked.wait(t.turn_id, 20)
        assert done.state is TurnState.completed
        assert await wait_async(lambda: len(rx.calls) >= 3, 20)
        log = await hooked.webhook_log(t.turn_id)
    assert [c[3] for c in rx.calls] == [500, 503, 200]
    ids = {c[1]["webhook-id"] for c in rx.calls}
    assert ids == {f"msg_{t.turn_id}"}  # every attempt carries the same id
    verifier = Webhook(SECRET)
    for _, headers, body, _ in rx.calls:
        payload = verifier.verify(body, {k.lower(): v for k, v in headers.items()})
        assert payload["type"] == "turn.completed"
        assert payload["data"]["turn_id"] == t.turn_id and payload["data"]["reply"] == done.reply
    assert log.state == "delivered" and [a.status for a in log.attempts] == [500, 503, 200]
    gaps = [b[0] - a[0] for a, b in zip(rx.calls, rx.calls[1:], strict=False)]
    assert gaps[1] > gaps[0] * 1.3  # exponential backoff


async def test_disallowed_host_is_refused_at_enqueue_and_nothing_is_written(
    fleet: Fleet, hooked: ChatProducer, raw_redis: Redis
) -> None:
    s = sid("deny")
    for url in ("http://10.0.0.7/internal", "http://localhost:6379/", "ftp://127.0.0.1/x", "http://u:p@127.0.0.1/"):
        with pytest.raises(WebhookNotAllowed):
            await hooked.enqueue(s, "hi", webhook_url=url)
    assert await raw_redis.llen(hooked.keys.session(s).inbox) == 0
    assert await raw_redis.exists(hooked.keys.session(s).drain_job) == 0


async def test_a_slow_receiver_never_delays_the_next_turn(fleet: Fleet, hooked: ChatProducer) -> None:
    with Receiver([], delay_s=3.0) as rx:
        fleet.start(1, **HOOK_ENV)
        s = sid("slow")
        turns = [await hooked.enqueue(s, f"turn {i}", webhook_url=rx.url) for i in range(3)]
        started = time.monotonic()
        for t in turns:
            assert (await hooked.wait(t.turn_id, 20)).state is TurnState.completed
        all_done = time.monotonic() - started
        assert await wait_async(lambda: len(rx.calls) == 3, 20)
    first_answered = rx.calls[0][0] - started
    print(f"\nall 3 turns done {all_done:.2f}s in; the first webhook was answered {first_answered:.2f}s in")
    assert all_done < first_answered  # the session went on while its webhooks waited
    assert sorted(json.loads(c[2])["data"]["turn_id"] for c in rx.calls) == sorted(t.turn_id for t in turns)
