"""History codec: one JSON object per message, in the ``messages_to_dict`` shape.

Empty fields are dropped (``messages_from_dict`` restores their defaults) so a stored
message costs little more than its text; ``content`` is always kept (an entry without it does
not decode, and an interrupted reply may be empty). Each message's ``id`` is ``<turn_id>:user``
(``:user2``, ``:user3``... for the texts that joined a coalesced turn) or ``<turn_id>:ai``, which
ties history entries back to the turn that wrote them. An interrupted turn's reply carries
``response_metadata={"interrupted": True}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, message_to_dict, messages_from_dict

_DROP = {"additional_kwargs", "type"}
INTERRUPTED = "interrupted"  # response_metadata key of a reply cut short by a stop


def encode_message(msg: BaseMessage) -> str:
    d = message_to_dict(msg)
    data = {k: v for k, v in d["data"].items() if (k == "content" or v not in (None, {}, [], "")) and k not in _DROP}
    return json.dumps({"type": d["type"], "data": data}, separators=(",", ":"), ensure_ascii=False)


def decode_messages(raw: Iterable[str | bytes]) -> list[BaseMessage]:
    return messages_from_dict([json.loads(r) for r in raw])


def turn_messages(
    turn_id: str, texts: str | Sequence[str], reply: AIMessage, *, interrupted: bool = False
) -> tuple[BaseMessage, ...]:
    """The history entries a turn adds: one user message per text (several when coalesced), then
    the reply; an interrupted turn's partial reply is marked in its ``response_metadata``."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    users = [HumanMessage(content=t, id=f"{turn_id}:user{n if n > 1 else ''}") for n, t in enumerate(texts, 1)]
    meta = {INTERRUPTED: True} if interrupted else {}
    ai = AIMessage(
        content=reply.content, id=f"{turn_id}:ai", usage_metadata=reply.usage_metadata, response_metadata=meta
    )
    return (*users, ai)


def is_interrupted(msg: BaseMessage) -> bool:
    return bool(msg.response_metadata.get(INTERRUPTED))


def turn_id_of(msg: BaseMessage) -> str | None:
    return msg.id.rsplit(":", 1)[0] if msg.id else None


def page_bounds(total: int, limit: int | None, before: int | None) -> tuple[int, int]:
    """``[start, end)`` of the page of up to ``limit`` messages just before index ``before``
    (default: the newest) in a history of ``total`` messages; all of them when ``limit`` is None."""
    end = total if before is None else max(0, min(before, total))
    start = 0 if limit is None else max(0, end - limit)
    return start, end
