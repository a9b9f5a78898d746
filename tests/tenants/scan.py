"""Reads a whole key prefix back from Redis and checks that no tenant's data sits in another's keys."""

from __future__ import annotations

import json
import re
from collections import defaultdict

from redis.asyncio import Redis

from chatlane.messages import decode_messages
from chatlane.tenants import SessionRef
from tests.conftest import keys_with_prefix

_RECORD = re.compile(r":turn:([0-9a-f]{32})$")
_SESSION = re.compile(r":\{([^}]*)\}:(inbox|history|turns)$")


def text_tenant(text: str) -> str:
    """The tests write every user text as ``tenant|session|n``."""
    return text.split("|", 1)[0]


async def assert_namespaces_clean(r: Redis, prefix: str) -> dict[str, dict[str, list[str]]]:
    """Asserts, over every key of ``prefix``: each turn record's tenant field agrees with its scoped
    session; each session's inbox and turn index name only turns of that very session; each history
    holds only its own tenant's texts (user messages) and replies made for its own tenant and session
    (the echo handler's JSON). Returns tenant -> session -> the user texts of its history."""
    keys = await keys_with_prefix(r, prefix)
    records: dict[str, dict[str, str]] = {}
    for k in keys:
        if m := _RECORD.search(k):
            records[m.group(1)] = await r.hgetall(k)  # type: ignore[misc]
    for tid, rec in records.items():
        assert rec["tenant"] == SessionRef.parse(rec["session"]).tenant, (tid, rec)
        assert text_tenant(rec["text"]) == rec["tenant"], (tid, rec)
    texts: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for k in keys:
        m = _SESSION.search(k)
        if not m:
            continue
        scoped, kind = m.groups()
        ref = SessionRef.parse(scoped)
        entries: list[str] = await r.lrange(k, 0, -1)  # type: ignore[misc]
        if kind in ("inbox", "turns"):
            for tid in entries:
                if tid in records:  # an ended turn's record may have expired
                    assert records[tid]["session"] == scoped, (k, tid, records[tid])
            continue
        mine: list[str] = []
        for msg in decode_messages(entries):
            if msg.type == "human":
                assert text_tenant(msg.text) == ref.tenant, (k, msg.text)
                mine.append(msg.text)
            elif msg.type == "ai" and msg.text.startswith("{"):
                seen = json.loads(msg.text)
                assert (seen["tenant"], seen["session_id"], seen["thread_id"]) == (ref.tenant, ref.session_id, scoped)
        texts[ref.tenant][ref.session_id] = mine
    return texts
