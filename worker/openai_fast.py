"""OpenAI-compatible chat models without the SDK's passes over every request and chunk (bench B9).

langchain-openai turns the messages into the API's JSON shape (``_convert_message_to_dict``), then
the openai SDK walks that whole body again, field by field against its TypedDicts
(``_transform_recursive``), to apply aliases and formats that chat messages never use. Measured
(bench B9, 84-message window): that walk was over half of a worker's CPU per turn, and it grows
with the window. On the way back the SDK builds a typed ``ChatCompletionChunk`` per streamed
chunk, which langchain-openai turns straight back into a dict (``model_dump``).

``preserialize(model)`` gives the model's chat-completions resource a thin stand-in whose
``create``
- passes the messages through ``extra_body`` and an empty list as ``messages``: the SDK walks the
  empty list, then merges ``extra_body`` over the body it built, which puts the messages back at
  the same key, in the same place. The bytes on the wire are unchanged
  (``tests/test_openai_wire.py`` compares them). The idea is the one users of openai-python
  PR #3616 and anthropic-sdk-python #1195 apply;
- for a streamed request, reads the response through the SDK's ``with_streaming_response`` and
  hands each chunk on as the dict the API sent, which langchain-openai takes as it is (it accepts
  dicts and model_dumps anything else). API errors are raised by the SDK as before; an ``error``
  event in the stream raises ``openai.APIError``, as the SDK's own stream does.

What it costs to maintain: it relies on things outside chatlane, all exercised by
``tests/test_openai_wire.py`` on every run: langchain-openai calls ``async_client.create(**payload)``
(or ``async_client.with_raw_response.create``, which gets only the first change) with the
converted messages and iterates what it returns inside ``async with``, accepting dict chunks; the
SDK merges ``extra_body`` into the JSON body key by key. The stand-in steps aside (passes the call
through untouched) for anything it does not recognize. ``CHATLANE_OPENAI_PRESERIALIZE=false``
turns it off.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.language_models import BaseChatModel


class _PreserializedCreate:
    """Wraps a ``create`` resource (``chat.completions`` or its ``with_raw_response``)."""

    def __init__(self, inner: Any, raw_chunks: bool = True) -> None:
        self._inner = inner
        self._raw_chunks = raw_chunks

    async def create(self, **kwargs: Any) -> Any:
        moved = _moved(kwargs)
        if self._raw_chunks and moved.get("stream") is True:
            return _DictChunks(self._inner.with_streaming_response.create(**moved))
        return await self._inner.create(**moved)

    @property
    def with_raw_response(self) -> _PreserializedCreate:
        return _PreserializedCreate(self._inner.with_raw_response, raw_chunks=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _DictChunks:
    """A streamed response whose chunks are the API's JSON objects, as dicts. The request is sent
    on entering (as the SDK's stream does when created), so API errors surface there."""

    def __init__(self, request: Any) -> None:
        self._request = request  # the SDK's AsyncResponseContextManager
        self._response: Any = None

    async def __aenter__(self) -> _DictChunks:
        self._response = await self._request.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._request.__aexit__(*exc)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        done = False
        async for line in self._response.iter_lines():
            # After [DONE] the rest of the body is read, not dropped: an HTTP/1.1 connection goes
            # back to the pool only once its response is consumed (else: a new connection per turn).
            if done or not line.startswith("data:"):
                continue  # event names, comments (keep-alives), blank separators
            data = line[5:].strip()
            if data.startswith("[DONE]"):
                done = True
                continue
            chunk = json.loads(data)
            if isinstance(chunk, dict) and chunk.get("error"):
                import openai  # loaded by now: this object came from its client

                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else None
                request = self._response.http_response.request
                raise openai.APIError(message or "An error occurred during streaming", request, body=error)
            yield chunk


def _moved(kwargs: dict[str, Any]) -> dict[str, Any]:
    messages = kwargs.get("messages")
    extra = kwargs.get("extra_body") or {}
    if not isinstance(messages, list) or not messages or not isinstance(extra, dict) or "messages" in extra:
        return kwargs
    return {**kwargs, "messages": [], "extra_body": {**extra, "messages": messages}}


def preserialize(model: BaseChatModel) -> BaseChatModel:
    """``model`` itself, its async chat-completions calls sending the messages as they are. Any
    model that is not an OpenAI-compatible one from langchain-openai is returned untouched."""
    if "langchain_openai" not in sys.modules:
        # Not loaded, so not an OpenAI model: importing it (and the openai SDK) would add ~0.4 s
        # to every worker's start-up for nothing.
        return model
    from langchain_openai.chat_models.base import BaseChatOpenAI

    client = getattr(model, "async_client", None)
    if isinstance(model, BaseChatOpenAI) and client is not None and not isinstance(client, _PreserializedCreate):
        model.async_client = _PreserializedCreate(client)
    return model
