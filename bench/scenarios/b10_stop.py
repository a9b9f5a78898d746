"""B10 stop latency: a client stops a running turn; how soon is the model call really over?

Measured where it matters, at an OpenAI-compatible stub in this process (same clock): from the
moment the stop request is answered (``cancel()`` returns, or the ``on_busy=interrupt`` enqueue
does) until the stub sees the client close the streaming connection. The worker streams other
sessions' replies at the same time, so the stop has to find its turn among them. Each stop lands
at a random point of a long reply. For interrupts, also the gap from that close to the next
turn's request: G1 at the model says it is never negative.
"""

from __future__ import annotations

import asyncio
import random
import time

from bench.env import Bench
from bench.report import Row, Sample, Target, fmt
from bench.scenarios.b3_handoff import MODEL, openai_env
from bench.stats import percentile
from devkit.openai_stub import OpenAIStub, Span
from producer import ChatProducer, TurnState

ID = "B10"
REPLY_S = 20.0  # a long reply: every stop lands mid-stream
CHUNKS = 400  # a chunk every 50 ms
BACKGROUND_SESSIONS = 20


def shape(quick: bool) -> tuple[int, int]:
    """(cancels, interrupts) per repeat."""
    return (5, 3) if quick else (40, 20)


async def span_of(stub: OpenAIStub, conversation: str, nth: int = 0, timeout: float = 30.0) -> Span:
    deadline = time.monotonic() + timeout
    while True:
        with stub.lock:
            spans = [sp for sp in stub.spans if sp.conversation == conversation]
        if len(spans) > nth:
            return spans[nth]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no request {nth} for {conversation!r} at the stub")
        await asyncio.sleep(0.002)


async def ended(span: Span, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while span.ended is None:
        if time.monotonic() > deadline:
            raise TimeoutError("the stopped call's connection never closed")
        await asyncio.sleep(0.001)
    return span.ended


async def one_stop(
    producer: ChatProducer, stub: OpenAIStub, session: str, interrupt: bool
) -> tuple[float, float, float]:
    """ms from the stop's answer to the connection close (negative: closed before the answer came),
    from sending the stop to the close, and from the close to the next request (interrupt)."""
    story = f"{session}: tell me a very long story"
    t = await producer.enqueue(session, story)
    span = await span_of(stub, story)
    await asyncio.sleep(random.uniform(0.05, 0.5))  # somewhere in the reply
    sent = time.monotonic()
    if interrupt:
        nxt = await producer.enqueue(session, "stop, a joke instead", on_busy="interrupt")
        answered = time.monotonic()
        closed = await ended(span)
        following = await span_of(stub, story, 1)  # the next turn's request repeats the story
        gap = (following.received - closed) * 1000
        await producer.cancel(nxt.turn_id)
        await producer.wait(nxt.turn_id, 30)
    else:
        await producer.cancel(t.turn_id)
        answered = time.monotonic()
        closed = await ended(span)
        gap = float("nan")
    st = await producer.wait(t.turn_id, 30)
    if st.state is not TurnState.interrupted or not span.closed_by_client:
        raise RuntimeError(f"the stop did not stop the turn: {st.state}, closed by client {span.closed_by_client}")
    return (closed - answered) * 1000, (closed - sent) * 1000, gap


async def background(producer: ChatProducer, run: str) -> list[str]:
    """Sessions streaming long replies the whole time, on the same worker."""
    sessions = [f"{run}-bg{i}" for i in range(BACKGROUND_SESSIONS)]
    for s in sessions:
        for n in range(3):
            await producer.enqueue(s, f"{s}: background story {n}")
    return sessions


async def measure(bench: Bench, repeats: int) -> list[Sample]:
    cancels, interrupts = shape(bench.quick)
    samples: list[Sample] = []
    with OpenAIStub(delay_s=REPLY_S, chunks=CHUNKS) as stub:
        async with (
            bench.run(bench.chatlane("b10", model=MODEL, env=openai_env(stub), model_timeout_s=60)) as (side,),
            ChatProducer(settings=side.settings) as producer,
        ):
            run = f"b10-{random.getrandbits(32):x}"
            busy = await background(producer, run)
            for r in range(repeats):
                sample: Sample = {"streams": float(BACKGROUND_SESSIONS)}
                for kind, n in (("cancel", cancels), ("interrupt", interrupts)):
                    got = [
                        await one_stop(producer, stub, f"{run}-r{r}{kind}{i}", kind == "interrupt") for i in range(n)
                    ]
                    for name, values in (("answer", [g[0] for g in got]), ("sent", [g[1] for g in got])):
                        sample[f"{kind}.{name}.p50"] = percentile(values, 50)
                        sample[f"{kind}.{name}.p99"] = percentile(values, 99)
                    if kind == "interrupt":
                        sample["gap.min"] = min(g[2] for g in got)
                        sample["gap.p50"] = percentile([g[2] for g in got], 50)
                samples.append(sample)
            for s in busy:
                for st in await producer.turns(s):
                    await producer.cancel(st.turn_id, keep_partial=False)
    return samples


def rows(m: Sample, quick: bool) -> list[Row]:
    cancels, interrupts = shape(quick)

    def ms(v: float) -> str:
        return fmt(v, " ms", 1)

    def closes(kind: str) -> str:
        return f"p99 {ms(m[f'{kind}.answer.p99'])} (p50 {ms(m[f'{kind}.answer.p50'])})"

    def from_sent(kind: str) -> str:
        return f"from the request sent: p99 {ms(m[f'{kind}.sent.p99'])} (p50 {ms(m[f'{kind}.sent.p50'])})"

    return [
        Row(
            ID,
            f"stop a running turn: cancel answered → model connection closed at the stub "
            f"({cancels} stops, while the worker streams {fmt(m['streams'])} other sessions; below 0: closed first)",
            closes("cancel"),
            from_sent("cancel"),
            "",
            Target("<=", 250.0, "p99 ≤ 250 ms"),
            m["cancel.answer.p99"],
        ),
        Row(
            ID,
            f"… on_busy=interrupt: enqueue answered → the running call's connection closed ({interrupts} stops)",
            closes("interrupt"),
            from_sent("interrupt"),
            "",
            Target("<=", 250.0, "p99 ≤ 250 ms"),
            m["interrupt.answer.p99"],
        ),
        Row(
            ID,
            "… stopped call closed → the next turn's request arrives (G1 at the model: never below 0)",
            f"min {ms(m['gap.min'])} (p50 {ms(m['gap.p50'])})",
            "",
            "",
            Target(">=", 0.0, "> 0 ms"),
            m["gap.min"],
        ),
    ]
