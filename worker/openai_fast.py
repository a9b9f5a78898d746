"""OpenAI-compatible chat models without the SDK's second pass over every request (bench B9).

langchain-openai turns the messages into the API's JSON shape (``_convert_message_to_dict``), then
the openai SDK walks that whole body again, field by field against its TypedDicts
(``_transform_recursive``), to apply aliases and formats that chat messages never use. Measured
(bench B9, 80-message window): that walk was ~80 % of a worker's CPU, 20-40 ms per turn.

``preserialize(model)`` gives the model's chat-completions resource a thin stand-in whose
``create`` passes the messages through ``extra_body`` and an empty list as ``messages``: the SDK
walks the empty list, then merges ``extra_body`` over the body it built, which puts the messages
back at the same key, in the same place. The bytes on the wire are unchanged
(``tests/test_openai_wire.py`` compares them). The idea is the one users of
openai-python PR #3616 and anthropic-sdk-python #1195 apply.

What it costs to maintain: it relies on two things outside chatlane, both checked by that test
on every run: langchain-openai calls ``async_client.create(**payload)`` (or
``async_client.with_raw_response.create``) with the converted messages, and the SDK merges
``extra_body`` into the JSON body key by key. If either changes, the test fails (or the stand-in
steps aside: it passes through any call it does not recognize). ``CHATLANE_OPENAI_PRESERIALIZE=false``
turns it off.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel


class _PreserializedCreate:
    """Wraps a ``create`` resource (``chat.completions`` or its ``with_raw_response``)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def create(self, **kwargs: Any) -> Any:
        return await self._inner.create(**_moved(kwargs))

    @property
    def with_raw_response(self) -> _PreserializedCreate:
        return _PreserializedCreate(self._inner.with_raw_response)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _moved(kwargs: dict[str, Any]) -> dict[str, Any]:
    messages = kwargs.get("messages")
    extra = kwargs.get("extra_body") or {}
    if not isinstance(messages, list) or not messages or not isinstance(extra, dict) or "messages" in extra:
        return kwargs
    return {**kwargs, "messages": [], "extra_body": {**extra, "messages": messages}}


def preserialize(model: BaseChatModel) -> BaseChatModel:
    """``model`` itself, its async chat-completions calls sending the messages as they are. Any
    model that is not an OpenAI-compatible one from langchain-openai is returned untouched."""
    try:
        from langchain_openai.chat_models.base import BaseChatOpenAI
    except ImportError:  # pragma: no cover - langchain-openai is a dependency
        return model
    client = getattr(model, "async_client", None)
    if isinstance(model, BaseChatOpenAI) and client is not None and not isinstance(client, _PreserializedCreate):
        model.async_client = _PreserializedCreate(client)
    return model
