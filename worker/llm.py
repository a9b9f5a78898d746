"""Builds the chat model from settings and streams one reply."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain.chat_models import init_chat_model
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.runnables import RunnableConfig

from chatlane.settings import Settings
from worker.fake_model import FakeChatModel


def build_model(settings: Settings) -> BaseChatModel:
    if settings.model == "fake":
        return FakeChatModel(
            delay_ms=settings.fake_delay_ms,
            chunks=settings.fake_chunks,
            fail_rate=settings.fake_fail_rate,
            midstream_fail_rate=settings.fake_midstream_fail_rate,
            hang_rate=settings.fake_hang_rate,
            span_log=settings.fake_span_log,
        )
    # Retries are ours (counted per turn, visible in its status), so the client makes none.
    extra: dict[str, Any] = {}
    if settings.model.startswith("openai:"):
        # Token usage in the stream's last chunk: budgets settle their estimates from it.
        extra["stream_usage"] = True
    model = init_chat_model(settings.model, timeout=settings.model_timeout_s, max_retries=0, **extra)
    assert isinstance(model, BaseChatModel)
    return model


def run_config(*, session_id: str, turn_id: str, attempt: int) -> RunnableConfig:
    """The LangChain config of one generation: callbacks and tracing see which turn it is."""
    return {
        "metadata": {"session_id": session_id, "turn_id": turn_id, "attempt": attempt},
        "configurable": {"thread_id": session_id},
    }


async def stream_reply(
    model: BaseChatModel,
    messages: list[BaseMessage],
    *,
    session_id: str,
    turn_id: str,
    attempt: int,
    on_chunk: Callable[[str], None],
) -> AIMessage:
    """Stream one generation, handing each text chunk to ``on_chunk``; returns the whole reply."""
    chunks: list[AIMessageChunk] = []
    config = run_config(session_id=session_id, turn_id=turn_id, attempt=attempt)
    async for chunk in model.astream(messages, config):
        chunks.append(chunk)
        if chunk.text:
            on_chunk(chunk.text)
    if not chunks:
        return AIMessage(content="")
    # One merge at the end: adding chunk by chunk builds a new message per chunk (~10 % of a
    # worker's CPU with a fast model, bench B1 profile).
    total = add_ai_message_chunks(chunks[0], *chunks[1:])
    return AIMessage(content=total.content, usage_metadata=total.usage_metadata)
