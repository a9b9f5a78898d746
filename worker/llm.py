"""Builds the chat model named by the settings (``CHATLANE_MODEL``)."""

from __future__ import annotations

from typing import Any

from langchain.chat_models import init_chat_model
from langchain_core.language_models import BaseChatModel

from chatlane.settings import Settings
from worker.fake_model import FakeChatModel
from worker.openai_fast import preserialize


def build_model(settings: Settings) -> BaseChatModel:
    if settings.model == "fake":
        return FakeChatModel(
            delay_ms=settings.fake_delay_ms,
            chunks=settings.fake_chunks,
            fail_rate=settings.fake_fail_rate,
            midstream_fail_rate=settings.fake_midstream_fail_rate,
            hang_rate=settings.fake_hang_rate,
            span_log=settings.fake_span_log,
            request_log=settings.fake_request_log,
        )
    # Retries are ours (counted per turn, visible in its status), so the client makes none.
    extra: dict[str, Any] = {}
    if settings.model.startswith("openai:"):
        # Token usage in the stream's last chunk: budgets settle their estimates from it.
        extra["stream_usage"] = True
    model = init_chat_model(settings.model, timeout=settings.model_timeout_s, max_retries=0, **extra)
    assert isinstance(model, BaseChatModel)
    if hasattr(model, "stream_chunk_timeout"):
        # langchain-openai bounds the wait for each streamed chunk (120 s) with an asyncio.wait_for,
        # a task per chunk: ~10 % of a worker's CPU per turn (bench B9). The drain already bounds
        # each attempt as a whole (CHATLANE_MODEL_TIMEOUT_S) and cancels it on a lost lease.
        model.stream_chunk_timeout = None
    return preserialize(model) if settings.openai_preserialize else model
