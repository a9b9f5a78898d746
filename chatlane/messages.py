"""History codec: one JSON object per message, ``{"type", "data"}`` as ``messages_to_dict`` writes it.

Every LangChain message type round-trips: human, AI (with ``tool_calls``, ``invalid_tool_calls``,
``usage_metadata``, ``additional_kwargs``), tool (``tool_call_id``, ``status``, ``artifact``), system;
content as a string or a list of blocks, empty content, any unicode. Fields equal to their defaults
are left out (``messages_from_dict`` restores them), so a stored chat message costs little more
than its text. Two things are not stored: ``response_metadata`` (the provider's model name,
finish reason, fingerprint...), except the mark of a reply cut short by a stop
(``{"interrupted": true}``), and the message's own ``id``, which chatlane replaces with
``<turn_id>:user`` for the turn's user message (``:user2``, ``:user3``... for the texts that
joined a coalesced turn) and ``<turn_id>:<n>`` (n = 1, 2, ...) for the messages the turn added:
the id ties every entry to the turn that wrote it (``:ai`` in entries written before turns could
add several messages).

Stored entries are compact JSON with ``type`` first and the message id last (``encode_message``):
the history's retention trim (chatlane/lua/trim_history.lua) tells a turn's user message and a tool
message apart by that text alone, without decoding it.

``content`` is always stored, even empty: an entry without it cannot be decoded (it once wedged
a session whose model returned an empty reply). Such legacy entries decode with empty content.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, messages_from_dict
from langchain_core.messages.utils import message_chunk_to_message

from chatlane.errors import HistoryEntryUnreadable

_NOT_STORED = {"response_metadata", "id", "type"}
USER_SUFFIX = ":user"
INTERRUPTED = "interrupted"  # response_metadata key of a reply cut short by a stop


def encode_message(msg: BaseMessage) -> str:
    data = msg.model_dump(exclude=_NOT_STORED, exclude_defaults=True)
    data["content"] = msg.content  # no default, but say it: an entry must always carry it
    if msg.response_metadata.get(INTERRUPTED):
        data["response_metadata"] = {INTERRUPTED: True}  # the one provider-independent mark kept
    if msg.id:
        data["id"] = msg.id
    return json.dumps({"type": msg.type, "data": data}, separators=(",", ":"), ensure_ascii=False)


def decode_entry(raw: str | bytes, index: int | None = None) -> BaseMessage:
    """One stored entry; raises HistoryEntryUnreadable (saying which and why) if it is not a message."""
    try:
        obj: Any = json.loads(raw)
        obj["data"].setdefault("content", "")
        (msg,) = messages_from_dict([obj])
    except Exception as e:  # JSON, shape, unknown type, validation: all mean "not a message"
        raise HistoryEntryUnreadable(index, f"{type(e).__name__}: {_first_line(e)}") from e
    return msg


def decode_messages(raw: Iterable[str | bytes], start: int | None = None) -> list[BaseMessage]:
    """Entries in order; ``start`` is the first one's index in the history (for error messages)."""
    return [decode_entry(r, None if start is None else start + i) for i, r in enumerate(raw)]


def user_messages(turn_id: str, texts: str | Sequence[str]) -> list[HumanMessage]:
    """A turn's user message, and the texts that joined it (on_busy=coalesce) each as its own."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    return [HumanMessage(content=t, id=f"{turn_id}{USER_SUFFIX}{n if n > 1 else ''}") for n, t in enumerate(texts, 1)]


def turn_messages(turn_id: str, texts: str | Sequence[str], added: Sequence[BaseMessage]) -> list[BaseMessage]:
    """The history entries a completed turn writes: its user message(s), then what it added, in
    order, with chatlane's ids. Streaming chunks become plain messages."""
    out: list[BaseMessage] = [*user_messages(turn_id, texts)]
    for n, m in enumerate(added, 1):
        msg = message_chunk_to_message(m)
        out.append(msg.model_copy(update={"id": f"{turn_id}:{n}", "response_metadata": {}}))
    return out


def interrupted_turn_messages(turn_id: str, texts: str | Sequence[str], partial: str) -> list[BaseMessage]:
    """The history entries of a turn stopped with its partial reply kept: its user message(s), then
    the text generated so far as one reply, marked interrupted in its ``response_metadata``. (An
    agent's tool calls of that attempt are left out: a call without its result would break the
    history's tool-message order.)"""
    reply = AIMessage(content=partial, id=f"{turn_id}:1", response_metadata={INTERRUPTED: True})
    return [*user_messages(turn_id, texts), reply]


def reply_text(added: Sequence[BaseMessage]) -> str:
    """What a turn's status shows as its reply: the text of the last AI message it added."""
    return next((m.text for m in reversed(added) if isinstance(m, AIMessage)), "")


def is_interrupted(msg: BaseMessage) -> bool:
    return bool(msg.response_metadata.get(INTERRUPTED))


def turn_id_of(msg: BaseMessage) -> str | None:
    return msg.id.rsplit(":", 1)[0] if msg.id else None


def is_turn_start(msg: BaseMessage) -> bool:
    """Whether ``msg`` opens a turn's group of entries (its user message)."""
    return bool(msg.id and msg.id.endswith(USER_SUFFIX))


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]
