"""A webhook names the tenant beside the turn's status: two tenants' sessions may share a name and
a receiver (CHATLANE_WEBHOOK_URL), and the receiver must tell them apart."""

from __future__ import annotations

from pydantic import SecretStr
from standardwebhooks import Webhook

from producer import ChatProducer, TurnState
from tests.conftest import Fleet, wait_async
from tests.test_webhooks import HOOK_ENV, SECRET, Receiver


async def test_webhooks_name_the_tenant(fleet: Fleet) -> None:
    with Receiver([]) as rx:
        fleet.start(1, **HOOK_ENV)
        settings = fleet.settings.model_copy(
            update={"webhook_secret": SecretStr(SECRET), "webhook_allow_hosts": "127.0.0.1", "webhook_url": rx.url}
        )
        async with ChatProducer(settings=settings, tenant="acme") as acme:
            sent = {t: await acme.for_tenant(t).enqueue("alice", f"{t}|alice|0") for t in ("acme", "bravo")}
            for t, st in sent.items():
                assert (await acme.for_tenant(t).wait(st.turn_id, 20)).state is TurnState.completed
            assert await wait_async(lambda: len(rx.calls) >= 2, 20)
    got = {}
    for _, headers, body, _ in rx.calls:
        payload = Webhook(SECRET).verify(body, {k.lower(): v for k, v in headers.items()})
        got[payload["tenant"]] = (payload["data"]["turn_id"], payload["data"]["session_id"])
    assert got == {t: (st.turn_id, "alice") for t, st in sent.items()}
