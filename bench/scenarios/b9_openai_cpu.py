"""B9 a worker's CPU per turn on the real OpenAI-compatible client path, at a full default window.

Each session starts with a chat-sized history long enough to fill the default window
(``history_max_tokens`` 4000: about 80 messages), then runs a backlog of turns through
``openai:gpt-4o-mini`` (langchain-openai) against the local stub. CPU is the worker process's
user+system time from the moment it is let loose on the backlog until the backlog is done, per
turn: arq, the lease, the window, the stream writes, the commit and the model client, everything.

The floor (``bench.httpx_floor``) sends the same request body, the last one the worker sent, with
plain httpx and reads the streamed reply: the least any client must spend. Beside it, the same
worker with ``CHATLANE_OPENAI_PRESERIALIZE=false``: the openai SDK's own pass over every request
(``_transform_recursive``), which pre-serializing skips (worker/openai_fast.py).

Last, what tool-call history costs: the example agent (devkit/agent_example.py, offline fake model,
no delay) answering turns that call one tool against turns that call none, per turn: worker CPU,
bytes stored in the history, and approximate tokens the turn adds to every later window.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from langchain_core.messages.utils import count_tokens_approximately

from bench.cpu import CpuMeter
from bench.env import Bench, Side, paused
from bench.load import backlog, enqueue_chatlane, prefill, wait_chatlane
from bench.report import Row, Sample, Target, fmt, times
from chatlane.messages import decode_messages
from devkit.agent_example import HANDLER
from devkit.openai_stub import OpenAIStub
from producer import ChatProducer

ID = "B9"
MODEL = "openai:gpt-4o-mini"
# A turn of these sizes is ~100 approximate tokens: the 4000-token default window holds ~80 messages.
USER_CHARS, AI_CHARS = 120, 260
PREFILL = 200


def turns(quick: bool) -> int:
    return 20 if quick else 100  # at most CHATLANE_MAX_QUEUED_PER_SESSION (100) queued at once


async def chatlane_cpu_ms(
    bench: Bench, side: Side, producer: ChatProducer, n: int, text: str = "u" * USER_CHARS
) -> tuple[float, str]:
    """CPU per turn of ``n`` turns of one session with a full window; and the session."""
    work = backlog(1, n, tag="b9", text=text)
    session = next(iter(work))
    await prefill(bench.redis, side.keys, session, PREFILL, USER_CHARS, AI_CHARS)
    with paused(side):
        await enqueue_chatlane(producer, work)
    cpu = CpuMeter(side.pids[0])
    await wait_chatlane(bench.redis, side.keys, 300)
    return cpu.seconds() / n * 1000, session


async def tool_history_costs(bench: Bench, n: int) -> Sample:
    """Per turn, with one tool call and with none: worker CPU, history bytes, window tokens."""
    s: Sample = {}
    async with (
        bench.run(bench.chatlane("b9a", handler=HANDLER)) as (side,),
        ChatProducer(settings=side.settings) as producer,
    ):
        for name, text in (("plain", "u" * USER_CHARS), ("tool", "u" * 90 + ' !tool=add:{"a": 2, "b": 3}')):
            s[f"{name}.cpu"], session = await chatlane_cpu_ms(bench, side, producer, n, text)
            raw: list[str] = await bench.redis.lrange(side.keys.session(session).history, PREFILL, -1)  # type: ignore[misc]
            s[f"{name}.bytes"] = sum(len(r.encode()) for r in raw) / n
            s[f"{name}.tokens"] = count_tokens_approximately(decode_messages(raw)) / n
            s[f"{name}.entries"] = len(raw) / n
    return s


async def floor_cpu_ms(stub: OpenAIStub, body: bytes, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "body.json"
        path.write_bytes(body)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.httpx_floor", stub.base_url, str(path), str(n),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 300)
    if proc.returncode != 0 or not out.startswith(b"cpu_ms "):
        raise RuntimeError(f"bench.httpx_floor failed: {out!r}")
    return float(out.split()[1])


async def measure(bench: Bench, repeats: int) -> list[Sample]:
    n = turns(bench.quick)
    samples: list[Sample] = []
    with OpenAIStub() as stub:
        env = {"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "bench"}
        specs = [bench.chatlane("b9p", model=MODEL, env=env), bench.chatlane("b9r", model=MODEL, env=env,
                                                                             openai_preserialize=False)]  # fmt: skip
        async with (
            bench.run(*specs) as (pre, raw),
            ChatProducer(settings=pre.settings) as p_pre,
            ChatProducer(settings=raw.settings) as p_raw,
        ):
            for _ in range(repeats):
                s: Sample = {"raw": (await chatlane_cpu_ms(bench, raw, p_raw, n))[0]}
                s["chatlane"] = (await chatlane_cpu_ms(bench, pre, p_pre, n))[0]
                body = stub.raw_requests[-1]
                s["messages"] = float(len(stub.requests[-1]["messages"]))
                s["kb"] = len(body) / 1024
                s["floor"] = await floor_cpu_ms(stub, body, n)
                s["ratio"] = s["chatlane"] / s["floor"]
                s["raw_ratio"] = s["raw"] / s["floor"]
                samples.append(s)
    for s in samples:
        s.update({f"agent.{k}": v for k, v in (await tool_history_costs(bench, n)).items()})
    return samples


def rows(m: Sample, quick: bool) -> list[Row]:
    def ms(v: float) -> str:
        return fmt(v, " ms", 2)

    shape = f"{fmt(m['messages'])} messages, {fmt(m['kb'], ' KB', 1)} request"
    return [
        Row(
            ID,
            f"worker CPU per turn, langchain-openai → local stub, full default window ({shape}), {turns(quick)} turns",
            ms(m["chatlane"]),
            f"same request body by plain httpx: {ms(m['floor'])}",
            times(m["ratio"]),
            Target("<=", 2.0, "≤ 2× httpx"),
            m["ratio"],
        ),
        Row(
            ID,
            "… with the openai SDK's own request transform (CHATLANE_OPENAI_PRESERIALIZE=false)",
            ms(m["raw"]),
            f"httpx {ms(m['floor'])}",
            times(m["raw_ratio"]),
        ),
        Row(
            ID,
            "… tool-call history: a create_agent turn that calls one tool (fake model), per turn: worker CPU, "
            "history bytes, tokens added to later windows",
            f"{ms(m['agent.tool.cpu'])}, {fmt(m['agent.tool.bytes'], ' B')}, {fmt(m['agent.tool.tokens'])} tokens "
            f"({fmt(m['agent.tool.entries'])} entries)",
            f"no tool call: {ms(m['agent.plain.cpu'])}, {fmt(m['agent.plain.bytes'], ' B')}, "
            f"{fmt(m['agent.plain.tokens'])} tokens ({fmt(m['agent.plain.entries'])} entries)",
            times(m["agent.tool.cpu"] / m["agent.plain.cpu"]),
        ),
    ]
