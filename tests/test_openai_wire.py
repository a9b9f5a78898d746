"""Pre-serialized OpenAI requests (worker/openai_fast.py) change nothing a server or a caller can see:
the same request bodies byte for byte, the same replies, the same errors."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from langchain.chat_models import init_chat_model
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from devkit.agent_example import add, lookup
from devkit.openai_stub import OpenAIStub
from worker.handlers import merge_chunks
from worker.openai_fast import _DictChunks, preserialize

CONVERSATION: list[BaseMessage] = [
    SystemMessage("Be brief — ünïcode ✓"),
    HumanMessage("what is 2 + 3? 👋"),
    AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1", "type": "tool_call"}]),
    ToolMessage("5", tool_call_id="call_1", name="add"),
    AIMessage([{"type": "text", "text": "It is "}, {"type": "text", "text": "5."}]),
    HumanMessage([{"type": "text", "text": "and this?"}, {"type": "image_url", "image_url": {"url": "data:,x"}}]),
    AIMessage(""),
]
ASKS = [
    "plain question",
    'use a tool !tool=add:{"a": 1.5, "b": 2}',
    'two tools !tool=add:{"a": 1, "b": 2} !tool=lookup:{"term": "fence"}',
    "nothing to say !empty",
]


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(chunks=5) as s:
        yield s


def model(stub: OpenAIStub, fast: bool) -> BaseChatModel:
    m = init_chat_model("openai:gpt-4o-mini", base_url=stub.base_url, api_key="k", max_retries=0, stream_usage=True)
    return preserialize(m) if fast else m


async def reply(m: Any, messages: list[BaseMessage]) -> AIMessage:
    return merge_chunks([c async for c in m.astream(messages)])


def same(a: AIMessage, b: AIMessage) -> bool:
    """Equal but for the stub's request number, which is in its replies and call ids (and so in the
    reply's length, which the stub's usage counts)."""

    def norm(m: AIMessage) -> str:
        usage = (m.usage_metadata or {}).get("input_tokens")
        return re.sub(r"(stub reply |call_stub)\d+", r"\1N", json.dumps([m.content, m.tool_calls, usage]))

    return norm(a) == norm(b)


@pytest.mark.parametrize("ask", ASKS)
@pytest.mark.parametrize("tools", [False, True], ids=["no-tools", "tools"])
async def test_same_bytes_on_the_wire_and_the_same_reply(stub: OpenAIStub, ask: str, tools: bool) -> None:
    messages = [*CONVERSATION, HumanMessage(ask)]
    replies, bodies = [], []
    for fast in (False, True):
        m: Any = model(stub, fast)
        if tools:
            m = m.bind_tools([add, lookup])
        before = len(stub.raw_requests)
        replies.append(await reply(m, messages))
        (body,) = stub.raw_requests[before:]
        bodies.append(body)
    assert bodies[0] == bodies[1]
    plain, fast_reply = replies
    assert same(plain, fast_reply), (plain, fast_reply)
    assert fast_reply.usage_metadata is not None
    if "!tool=" in ask:
        assert [c["name"] for c in fast_reply.tool_calls] == [n for n in ("add", "lookup") if f"!tool={n}" in ask]


async def test_non_streamed_calls_are_unchanged_too(stub: OpenAIStub) -> None:
    answers = [
        await model(stub, fast).ainvoke([HumanMessage('sum !tool=add:{"a": 1, "b": 1}')]) for fast in (False, True)
    ]
    assert stub.raw_requests[-1] == stub.raw_requests[-2]
    assert same(answers[0], answers[1])  # type: ignore[arg-type]


async def test_api_errors_are_the_same(stub: OpenAIStub) -> None:
    bad = [HumanMessage("hi"), ToolMessage("orphan", tool_call_id="call_x")]  # the stub answers 400
    errors = []
    for fast in (False, True):
        with pytest.raises(openai.BadRequestError) as e:
            await reply(model(stub, fast), bad)
        errors.append((type(e.value), e.value.status_code, str(e.value)))
    assert errors[0] == errors[1]


async def test_an_error_event_in_the_stream_raises_like_the_sdk() -> None:
    class Response:
        http_response = type("R", (), {"request": None})()

        async def iter_lines(self) -> AsyncIterator[str]:
            yield 'data: {"choices": [{"index": 0, "delta": {"content": "par"}}]}'
            yield ""
            yield ": keep-alive"
            yield 'data: {"error": {"message": "the model is overloaded"}}'

    class Request:
        async def __aenter__(self) -> Response:
            return Response()

        async def __aexit__(self, *exc: object) -> None:
            pass

    got = []
    with pytest.raises(openai.APIError, match="the model is overloaded"):
        async with _DictChunks(Request()) as chunks:
            async for chunk in chunks:
                got.append(chunk)
    assert got == [{"choices": [{"index": 0, "delta": {"content": "par"}}]}]
