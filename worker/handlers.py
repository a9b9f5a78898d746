"""Adapters that run one turn with whatever the worker was given (``CHATLANE_HANDLER``): a chat
model, a LangGraph graph (``create_agent``), or an async generator function. Each streams text to
the turn's token stream as it comes and returns the messages the turn adds, in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, RemoveMessage, SystemMessage
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.messages.utils import message_chunk_to_message

from worker.turn import Emitter, ToolEvents, Turn

if TYPE_CHECKING:
    # Loaded by whoever built the graph (see handler_loader._is_graph).
    from langgraph.pregel import Pregel

HandlerFunction = Callable[[Turn], AsyncIterator[Any]]


class TurnHandler(Protocol):
    kind: str  # for logs: "chat model", "graph", "async generator"

    async def run(self, turn: Turn, emit: Emitter) -> list[BaseMessage]:
        """Run one attempt; the messages it adds to the conversation, in order."""
        ...


class ChatModelHandler:
    """One call of a chat model: ``system_prompt`` (if any), the window, the user message.
    The reply is kept whole: tool calls, usage, content blocks."""

    kind = "chat model"

    def __init__(self, model: BaseChatModel, system_prompt: str | None) -> None:
        self.model = model
        self.system_prompt = system_prompt

    async def run(self, turn: Turn, emit: Emitter) -> list[BaseMessage]:
        prompt: list[BaseMessage] = [SystemMessage(self.system_prompt)] if self.system_prompt else []
        chunks: list[AIMessageChunk] = []
        async for chunk in self.model.astream([*prompt, *turn.messages], turn.config):
            chunks.append(chunk)
            if chunk.text:
                emit.text(chunk.text)
        reply = merge_chunks(chunks)
        ToolEvents(emit).seen(reply)
        return [reply]


def merge_chunks(chunks: list[AIMessageChunk]) -> AIMessage:
    if not chunks:
        return AIMessage(content="")
    # One merge at the end: adding chunk by chunk builds a new message per chunk (~10 % of a
    # worker's CPU with a fast model, bench B1 profile).
    reply = message_chunk_to_message(add_ai_message_chunks(chunks[0], *chunks[1:]))
    assert isinstance(reply, AIMessage)
    return reply


class GraphHandler:
    """A compiled LangGraph graph with a ``messages`` state, e.g. ``create_agent(model, tools)``.

    It gets ``{"messages": window + [user message]}`` and the turn's config. Token chunks come from
    the ``messages`` stream; the messages the turn adds are the new messages of each node's update
    (the ``updates`` stream), in order: the model's tool calls, the tools' results, the answer.
    """

    kind = "graph"

    def __init__(self, graph: Pregel[Any, Any, Any, Any]) -> None:
        self.graph = graph

    async def run(self, turn: Turn, emit: Emitter) -> list[BaseMessage]:
        given = {m.id for m in turn.messages}
        added: list[BaseMessage] = []
        events = ToolEvents(emit)
        stream = self.graph.astream({"messages": turn.messages}, turn.config, stream_mode=["messages", "updates"])
        async for mode, data in stream:
            if mode == "messages":
                msg = data[0]
                if isinstance(msg, AIMessage) and msg.text:
                    emit.text(msg.text)
                continue
            updates = cast(dict[str, Any], data)
            for node, update in updates.items():
                if node == "__interrupt__":
                    raise RuntimeError("the graph interrupted (waits for input); a chatlane turn cannot wait")
                for m in _messages_in(update):
                    # A node may return messages it was given (or remove some, e.g. a summarizing
                    # middleware): history only grows, with what is new.
                    if isinstance(m, RemoveMessage) or (m.id is not None and m.id in given):
                        continue
                    added.append(m)
                    events.seen(m)
        return added


def _messages_in(update: Any) -> list[BaseMessage]:
    """The messages of one node's update: a state dict, a Command, or a list of them."""
    from langgraph.types import Command

    if isinstance(update, list | tuple):
        return [m for u in update for m in _messages_in(u)]
    if isinstance(update, Command):
        update = update.update
    value = update.get("messages") if isinstance(update, dict) else None
    if isinstance(value, BaseMessage):
        return [value]
    return [m for m in value if isinstance(m, BaseMessage)] if isinstance(value, list) else []


class GeneratorHandler:
    """``async def handle(turn)`` yielding text chunks (``str``, streamed) and whole messages
    (``BaseMessage``: what the turn adds, in order). An ``AIMessageChunk`` is streamed, and the
    chunks make one reply if no whole message came; with neither, the text chunks make it."""

    kind = "async generator"

    def __init__(self, fn: HandlerFunction) -> None:
        self.fn = fn

    async def run(self, turn: Turn, emit: Emitter) -> list[BaseMessage]:
        added: list[BaseMessage] = []
        chunks: list[AIMessageChunk] = []
        texts: list[str] = []
        events = ToolEvents(emit)
        async for item in self.fn(turn):
            if isinstance(item, str):
                texts.append(item)
                emit.text(item)
            elif isinstance(item, AIMessageChunk):
                chunks.append(item)
                if item.text:
                    emit.text(item.text)
            elif isinstance(item, BaseMessage):
                added.append(item)
                events.seen(item)
            else:
                raise TypeError(f"a handler yields str or BaseMessage, not {type(item).__name__}")
        if added:
            return added
        reply = merge_chunks(chunks) if chunks else AIMessage(content="".join(texts))
        events.seen(reply)
        return [reply]
