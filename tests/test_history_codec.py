"""The history codec stores and reads back every message exactly; the window cuts only at turn
boundaries and never feeds a model an unanswered tool call or an orphaned tool result."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from chatlane.errors import HistoryEntryUnreadable
from chatlane.messages import decode_entry, encode_message, is_turn_start, reply_text, turn_id_of, turn_messages
from chatlane.stream import EventType, Replay, StreamEvent, ToolEvent, ToolPhase
from devkit.openai_rules import order_violation
from worker.window import Window, feedable

T1, T2, T3 = "1" * 32, "2" * 32, "3" * 32
USAGE = {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15}

EVERY_KIND: list[BaseMessage] = [
    HumanMessage("héllo 👋 — ünïcode"),
    SystemMessage("be brief"),
    AIMessage("plain answer", usage_metadata=USAGE, name="agent", additional_kwargs={"refusal": None, "x": 1}),
    AIMessage(
        "",
        tool_calls=[
            {"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1", "type": "tool_call"},
            {"name": "lookup", "args": {}, "id": "call_2", "type": "tool_call"},
        ],
        invalid_tool_calls=[
            {"name": "bad", "args": "{not json", "id": "call_3", "error": "no", "type": "invalid_tool_call"}
        ],
        usage_metadata=USAGE,
    ),
    ToolMessage("5", tool_call_id="call_1", name="add"),
    ToolMessage("boom", tool_call_id="call_2", name="lookup", status="error", artifact={"trace": [1, 2]}),
    AIMessage([{"type": "text", "text": "blocks "}, {"type": "text", "text": "of text"}]),
    AIMessage(""),
    AIMessage([]),
    HumanMessage([{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:x"}}]),
]


@pytest.mark.parametrize("msg", EVERY_KIND, ids=lambda m: f"{m.type}:{str(m.content)[:12]}")
def test_every_message_reads_back_exactly(msg: BaseMessage) -> None:
    stored = msg.model_copy(update={"id": f"{T1}:1"})
    back = decode_entry(encode_message(stored))
    assert back == stored
    assert type(back) is type(stored)
    assert json.loads(encode_message(stored))["data"]["content"] == stored.content  # always there


def test_what_is_not_stored_is_provider_metadata_and_the_own_id() -> None:
    chunk = AIMessageChunk(
        content="hi", id="run-123", response_metadata={"model_name": "gpt", "finish_reason": "stop"},
        tool_call_chunks=[{"name": "add", "args": '{"a": 1}', "id": "c1", "index": 0, "type": "tool_call_chunk"}],
    )  # fmt: skip
    user, ai = turn_messages(T1, "question", [chunk])
    assert (user.id, ai.id) == (f"{T1}:user", f"{T1}:1")
    assert isinstance(ai, AIMessage) and not isinstance(ai, AIMessageChunk)
    assert ai.tool_calls == [{"name": "add", "args": {"a": 1}, "id": "c1", "type": "tool_call"}]
    entry = json.loads(encode_message(ai))
    assert "response_metadata" not in entry["data"] and entry["data"]["id"] == f"{T1}:1"
    assert [turn_id_of(m) for m in (user, ai)] == [T1, T1]
    assert is_turn_start(user) and not is_turn_start(ai)
    assert reply_text([ai, ToolMessage("1", tool_call_id="c1"), AIMessage("the answer")]) == "the answer"
    assert reply_text([ai]) == "hi"


def test_an_empty_reply_from_before_the_fix_still_decodes() -> None:
    """Entries an older chatlane wrote for an empty reply (no content) wedged their session."""
    old = json.dumps({"type": "ai", "data": {"id": f"{T1}:ai"}})
    assert decode_entry(old) == AIMessage("", id=f"{T1}:ai")


@pytest.mark.parametrize("raw", ["{not json", '{"type": "martian", "data": {"content": "x"}}', '"just a string"',
                                 '{"type": "tool", "data": {"content": "no call id"}}'])  # fmt: skip
def test_an_undecodable_entry_says_which_and_why(raw: str) -> None:
    with pytest.raises(HistoryEntryUnreadable) as e:
        decode_entry(raw, 7)
    assert e.value.index == 7 and "history entry 7 cannot be decoded" in str(e.value)
    assert e.value.code == "history_entry_unreadable"


def turn(tid: str, *added: BaseMessage) -> list[BaseMessage]:
    return turn_messages(tid, f"question {tid[0]}", list(added))


def calls(*ids: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "add", "args": {}, "id": i, "type": "tool_call"} for i in ids])


def result(call_id: str) -> ToolMessage:
    return ToolMessage("ok", tool_call_id=call_id, name="add")


def as_openai(messages: list[BaseMessage]) -> list[dict[str, object]]:
    from langchain_openai.chat_models.base import _convert_message_to_dict

    return [_convert_message_to_dict(m) for m in messages]


def test_the_window_cuts_only_before_a_turn() -> None:
    agent_turn = turn(T2, calls("a", "b"), result("a"), result("b"), AIMessage("x" * 400))
    w = Window(10_000)
    w.extend([*turn(T1, AIMessage("first")), *agent_turn, *turn(T3, AIMessage("last"))])
    assert len(w.messages) == 2 + 5 + 2 and w.entries == 9
    # A budget that holds the last turn and part of the agent's: the agent's whole turn goes.
    w.resize(w.tokens - 20)
    assert [turn_id_of(m) for m in w.messages] == [T3, T3] and w.entries == 2
    assert order_violation(as_openai(w.messages)) is None


@pytest.mark.parametrize(
    "added",
    [
        [calls("a")],  # tool calls only: the handler returned no results
        [calls("a", "b"), result("a"), AIMessage("answer")],  # one of two calls answered
        [result("zzz"), AIMessage("answer")],  # a result for no call
        [calls("a"), AIMessage("between"), result("a")],  # the result comes too late
        [AIMessage("thinking", tool_calls=[{"name": "add", "args": {}, "id": "a", "type": "tool_call"}])],
    ],
)
def test_a_turn_breaking_the_tool_rules_is_fed_without_what_breaks_them(added: list[BaseMessage]) -> None:
    stored = [*turn(T1, *added), *turn(T2, AIMessage("fine"))]
    fed = [m for t in (stored[: len(added) + 1], stored[len(added) + 1 :]) for m in feedable(t)]
    assert order_violation(as_openai(fed)) is None
    assert order_violation(as_openai(stored)) is not None  # the stored history itself is unchanged


def test_feedable_keeps_well_formed_turns_as_they_are() -> None:
    t = turn(T1, calls("a", "b"), result("b"), result("a"), calls("c"), result("c"), AIMessage("done"))
    assert feedable(t) == t


def test_tool_events_replay_with_their_attempt() -> None:
    ev = ToolEvent("add", "call_1", ToolPhase.call)
    parsed = StreamEvent.parse("1-0", {k: str(v) for k, v in ev.fields(2).items()})
    assert parsed.type is EventType.tool and parsed.tool == ev and parsed.attempt == 2
    replay = Replay()
    assert replay.accept(parsed)
    assert not replay.accept(StreamEvent.parse("1-1", {k: str(v) for k, v in ev.fields(1).items()}))  # stale
