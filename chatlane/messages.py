"""History codec: one JSON object per message, in the ``messages_to_dict`` shape.

Empty fields are dropped (``messages_from_dict`` restores their defaults) so a stored
message costs little more than its text. Each message's ``id`` is ``<turn_id>:user`` or
``<turn_id>:ai``, which ties history entries back to the turn that wrote them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, message_to_dict, messages_from_dict

_DROP = {"additional_kwargs", "response_metadata", "type"}


def encode_message(msg: BaseMessage) -> str:
    d = message_to_dict(msg)
    data = {k: v for k, v in d["data"].items() if v not in (None, {}, [], "") and k not in _DROP}
    return json.dumps({"type": d["type"], "data": data}, separators=(",", ":"), ensure_ascii=False)


def decode_messages(raw: Iterable[str | bytes]) -> list[BaseMessage]:
    return messages_from_dict([json.loads(r) for r in raw])


def turn_messages(turn_id: str, text: str, reply: AIMessage) -> tuple[HumanMessage, AIMessage]:
    """The two history entries a completed turn adds."""
    ai = AIMessage(content=reply.content, id=f"{turn_id}:ai", usage_metadata=reply.usage_metadata)
    return HumanMessage(content=text, id=f"{turn_id}:user"), ai


def turn_id_of(msg: BaseMessage) -> str | None:
    return msg.id.rsplit(":", 1)[0] if msg.id else None


def page_bounds(total: int, limit: int | None, before: int | None) -> tuple[int, int]:
    """``[start, end)`` of the page of up to ``limit`` messages just before index ``before``
    (default: the newest) in a history of ``total`` messages; all of them when ``limit`` is None."""
    end = total if before is None else max(0, min(before, total))
    start = 0 if limit is None else max(0, end - limit)
    return start, end
