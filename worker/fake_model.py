"""The offline ``fake`` chat model: deterministic, streaming, history-aware, fault-injectable.

Its reply counts the user messages it was shown and quotes the previous one, so a test or
the demo can see that a turn ran against the right history. Faults come from directives in
the user's text, keyed by the attempt number the drain passes in the run's metadata
(``RunnableConfig["metadata"]``: ``turn_id``, ``attempt``):
``!fail`` (always), ``!fail=N`` (attempts 1..N raise), ``!failmid=N`` (raise after half the
chunks), ``!hang=N`` (never finish), ``!delay=MS`` (override the delay). Random faults for
soaks come from the ``*_rate`` fields, seeded by (turn id, attempt), so a run is repeatable.
``astream`` hands those two values on to ``_astream`` as its own keyword, which only this model
ever receives (a real provider's client would send unknown kwargs to its API).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig

_DIRECTIVE = re.compile(r"!(failmid|fail|hang|delay)(?:=(\d+))?")
_RUN = "chatlane_run"  # the keyword astream passes to _astream: (turn id, attempt)


class FakeModelError(RuntimeError):
    pass


class FakeChatModel(BaseChatModel):
    delay_ms: int = 0
    chunks: int = 8
    fail_rate: float = 0.0
    midstream_fail_rate: float = 0.0
    hang_rate: float = 0.0
    span_log: str | None = None

    @property
    def _llm_type(self) -> str:
        return "chatlane-fake"

    def reply_for(self, messages: list[BaseMessage]) -> str:
        humans = [m.text for m in messages if m.type == "human"]
        current = humans[-1] if humans else ""
        earlier = len(humans) - 1
        said = f" Before this you said {_clip(humans[-2])!r}." if earlier > 0 else ""
        return f"Reply #{len(humans)} to {_clip(current)!r}: I can see {earlier} earlier message(s).{said}"

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, *, stop: list[str] | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        meta = (config or {}).get("metadata") or {}
        run = (str(meta.get("turn_id", "")), int(meta.get("attempt", 1)))
        async for chunk in super().astream(input, config, stop=stop, **{_RUN: run, **kwargs}):
            yield chunk

    def _plan(self, messages: list[BaseMessage], run: tuple[str, int] | None) -> tuple[str, int, str | None]:
        """(reply, delay ms, fault) where fault is None, "fail", "failmid" or "hang"."""
        turn_id, attempt = run or ("", 1)
        text = next((m.text for m in reversed(messages) if m.type == "human"), "")
        delay, fault = self.delay_ms, None
        for name, arg in _DIRECTIVE.findall(text):
            if name == "delay":
                delay = int(arg or 0)
            elif fault is None and (not arg or attempt <= int(arg)):
                fault = name
        if fault is None and (self.fail_rate or self.midstream_fail_rate or self.hang_rate):
            r = random.Random(f"{turn_id or text}/{attempt}").random()
            for name, rate in (("fail", self.fail_rate), ("failmid", self.midstream_fail_rate),
                               ("hang", self.hang_rate)):  # fmt: skip
                if r < rate:
                    fault = name
                    break
                r -= rate
        return self.reply_for(messages), delay, fault

    def _pieces(self, reply: str) -> list[str]:
        n = max(1, min(self.chunks, len(reply)))
        step = -(-len(reply) // n)
        return [reply[i : i + step] for i in range(0, len(reply), step)]

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        reply, delay, fault = self._plan(messages, kwargs.get(_RUN))
        if fault == "fail":
            raise FakeModelError("fake model: injected failure")
        pieces = self._pieces(reply)
        pause = delay / 1000 / len(pieces)
        loop = asyncio.get_running_loop()
        start, wall_start = loop.time(), time.time()
        for i, piece in enumerate(pieces):
            if fault == "hang" and i == len(pieces) // 2:
                await asyncio.Event().wait()
            if fault == "failmid" and i == len(pieces) // 2:
                raise FakeModelError("fake model: injected failure mid-stream")
            # Chunk i is due at start + (i + 1) * pause, as from a server that generates at its own
            # pace: a busy worker loop delays a chunk, not all the ones after it (sleeping `pause`
            # each time added ~10 ms per 200-ms turn on a loaded worker, bench B2). Also yields to
            # the loop when the delay is 0.
            await asyncio.sleep(max(0.0, start + (i + 1) * pause - loop.time()))
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        if self.span_log:
            first = next((m.text for m in messages if m.type == "human"), "")
            with open(self.span_log, "a", encoding="utf-8") as f:  # noqa: ASYNC230 - bench-only, one short line
                f.write(f"{first}\t{wall_start:.6f}\t{time.time():.6f}\n")

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply, delay, fault = self._plan(messages, kwargs.get(_RUN))
        if fault is not None:
            raise FakeModelError(f"fake model: injected {fault} (sync path does not hang)")
        pieces = self._pieces(reply)
        for piece in pieces:
            time.sleep(delay / 1000 / len(pieces))
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(c.text for c in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def _clip(s: str, n: int = 60) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"
