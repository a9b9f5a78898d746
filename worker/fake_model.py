"""The offline ``fake`` chat model: deterministic, streaming, history-aware, fault-injectable,
and able to call tools.

Its reply counts the user messages it was shown and quotes the previous one, so a test or
the demo can see that a turn ran against the right history. Directives in the user's text:
- faults, keyed by the attempt number of the run (``RunnableConfig["metadata"]``: ``turn_id``,
  ``attempt``): ``!fail`` (always), ``!fail=N`` (attempts 1..N raise), ``!failmid=N`` (raise after
  half the chunks), ``!hang=N`` (never finish), ``!delay=MS`` (override the delay);
- tools: ``!tool=NAME:{json args}`` (several allowed) makes the reply to that user message a call
  of those tools; once their results follow, the model answers with them. Bound tools are not
  required: without an agent to run them, the turn's reply is the tool calls alone;
- reply shapes: ``!empty`` (empty content), ``!blocks`` (content as a list of text blocks).
Random faults for soaks come from the ``*_rate`` fields, seeded by (turn id, attempt), so a run is
repeatable. ``astream`` hands the run's (turn id, attempt) to ``_astream`` as its own keyword; when
an agent calls the model (``ainvoke``), they come from the config LangChain has in context.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolCallChunk, ToolMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

_DIRECTIVE = re.compile(r"!(failmid|fail|hang|delay)(?:=(\d+))?")
_TOOL = re.compile(r"!tool=(\w+):")
_RUN = "chatlane_run"  # the keyword astream passes to _astream: (turn id, attempt)


class FakeModelError(RuntimeError):
    pass


@dataclass
class Plan:
    reply: str
    delay_ms: int
    fault: str | None  # None, "fail", "failmid" or "hang"
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # tool calls to make
    shape: str = "text"  # "text", "empty" or "blocks"


class FakeChatModel(BaseChatModel):
    delay_ms: int = 0
    chunks: int = 8
    fail_rate: float = 0.0
    midstream_fail_rate: float = 0.0
    hang_rate: float = 0.0
    span_log: str | None = None
    request_log: str | None = None

    @property
    def _llm_type(self) -> str:
        return "chatlane-fake"

    def bind_tools(
        self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """What ``create_agent`` needs: the tools are bound as an OpenAI model would get them."""
        kwargs.pop("tool_choice", None)
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def reply_for(self, messages: list[BaseMessage]) -> str:
        humans = [m.text for m in messages if m.type == "human"]
        current = humans[-1] if humans else ""
        earlier = len(humans) - 1
        said = f" Before this you said {_clip(humans[-2])!r}." if earlier > 0 else ""
        results = _tool_results(messages)
        if results:
            said = " The tools said: " + "; ".join(f"{name} -> {_clip(out)}" for name, out in results) + "."
        return f"Reply #{len(humans)} to {_clip(current)!r}: I can see {earlier} earlier message(s).{said}"

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, *, stop: list[str] | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        meta = (config or {}).get("metadata") or {}
        run = (str(meta.get("turn_id", "")), int(meta.get("attempt", 1)))
        async for chunk in super().astream(input, config, stop=stop, **{_RUN: run, **kwargs}):
            yield chunk

    def _plan(self, messages: list[BaseMessage], run: tuple[str, int] | None) -> Plan:
        if run is None:  # called by an agent (ainvoke): the run's config is LangChain's context
            meta = ensure_config().get("metadata") or {}
            run = (str(meta.get("turn_id", "")), int(meta.get("attempt", 1)))
        turn_id, attempt = run
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
        # Tools are called in answer to the user message itself, not after their results are in.
        calls = tool_directives(text) if messages and messages[-1].type == "human" else []
        shape = "empty" if "!empty" in text else "blocks" if "!blocks" in text else "text"
        return Plan(self.reply_for(messages), delay, fault, calls, shape)

    def _pieces(self, reply: str) -> list[str]:
        n = max(1, min(self.chunks, len(reply)))
        step = -(-len(reply) // n)
        return [reply[i : i + step] for i in range(0, len(reply), step)] or [""]

    def _chunks(self, plan: Plan, turn_id: str) -> list[AIMessageChunk]:
        if plan.calls:
            base = turn_id[:12] or f"{zlib.crc32(plan.reply.encode()):08x}"
            return [
                AIMessageChunk(content="", tool_call_chunks=[
                    ToolCallChunk(name=name, args=json.dumps(args), id=f"call_{base}_{i}", index=i)
                ])
                for i, (name, args) in enumerate(plan.calls)
            ]  # fmt: skip
        if plan.shape == "empty":
            return [AIMessageChunk(content="")]
        if plan.shape == "blocks":
            return [AIMessageChunk(content=[{"type": "text", "text": p, "index": 0}]) for p in self._pieces(plan.reply)]
        return [AIMessageChunk(content=p) for p in self._pieces(plan.reply)]

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        run = kwargs.get(_RUN)
        plan = self._plan(messages, run)
        turn_id = (run or ("", 1))[0] or str((ensure_config().get("metadata") or {}).get("turn_id", ""))
        self._log_request(messages, turn_id)
        if plan.fault == "fail":
            raise FakeModelError("fake model: injected failure")
        chunks = self._chunks(plan, turn_id)
        pause = plan.delay_ms / 1000 / len(chunks)
        loop = asyncio.get_running_loop()
        start, wall_start = loop.time(), time.time()
        for i, chunk in enumerate(chunks):
            if plan.fault == "hang" and i == len(chunks) // 2:
                await asyncio.Event().wait()
            if plan.fault == "failmid" and i == len(chunks) // 2:
                raise FakeModelError("fake model: injected failure mid-stream")
            # Chunk i is due at start + (i + 1) * pause, as from a server that generates at its own
            # pace: a busy worker loop delays a chunk, not all the ones after it (sleeping `pause`
            # each time added ~10 ms per 200-ms turn on a loaded worker, bench B2). Also yields to
            # the loop when the delay is 0.
            await asyncio.sleep(max(0.0, start + (i + 1) * pause - loop.time()))
            yield ChatGenerationChunk(message=chunk)
        if self.span_log:
            first = next((m.text for m in messages if m.type == "human"), "")
            with open(self.span_log, "a", encoding="utf-8") as f:  # noqa: ASYNC230 - bench-only, one short line
                f.write(f"{first}\t{wall_start:.6f}\t{time.time():.6f}\n")

    def _log_request(self, messages: list[BaseMessage], turn_id: str) -> None:
        if not self.request_log:
            return
        line = {
            "turn_id": turn_id,
            "first": messages[0].text[:40] if messages else "",
            "types": [m.type for m in messages],
            "tokens": [count_tokens_approximately([m]) for m in messages],
            "tool_call_ids": [[c["id"] for c in m.tool_calls] if isinstance(m, AIMessage) else None for m in messages],
            "tool_results": [m.tool_call_id if isinstance(m, ToolMessage) else None for m in messages],
        }
        with open(self.request_log, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        plan = self._plan(messages, kwargs.get(_RUN, ("", 1)))
        if plan.fault is not None:
            raise FakeModelError(f"fake model: injected {plan.fault} (sync path does not hang)")
        chunks = self._chunks(plan, "")
        for chunk in chunks:
            time.sleep(plan.delay_ms / 1000 / len(chunks))
            yield ChatGenerationChunk(message=chunk)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(c.text for c in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def tool_directives(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``!tool=NAME:{...}`` directives in order; the JSON object may contain spaces (devkit's
    OpenAI stub reads them too)."""
    calls: list[tuple[str, dict[str, Any]]] = []
    for m in _TOOL.finditer(text):
        try:
            args, _ = json.JSONDecoder().raw_decode(text, m.end())
        except json.JSONDecodeError:
            continue
        if isinstance(args, dict):
            calls.append((m.group(1), args))
    return calls


def _tool_results(messages: list[BaseMessage]) -> list[tuple[str, str]]:
    """(tool name, result) of the tool messages after the last user message."""
    last_human = max((i for i, m in enumerate(messages) if m.type == "human"), default=-1)
    names = {c["id"]: c["name"] for m in messages[last_human + 1 :] if isinstance(m, AIMessage) for c in m.tool_calls}
    return [
        (m.name or names.get(m.tool_call_id, "tool"), m.text)
        for m in messages[last_human + 1 :]
        if isinstance(m, ToolMessage)
    ]


def _clip(s: str, n: int = 60) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"
