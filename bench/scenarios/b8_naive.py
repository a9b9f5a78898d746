"""B8 the naive patterns (``bench.naive``, anti-patterns) beside chatlane, in one harness.

Every implementation gets the same burst: several sessions, each with several turns arriving at
once, on two worker processes, fake model 100 ms. Then the stored histories are compared with
the enqueue order: lost turns (accepted, not failed, not in the history), reordered turns
(committed after a turn enqueued later), failed turns, and the handoff latency between
consecutive turns of a session, measured at the model for every side alike: the fake model logs
when each generation starts and ends (CHATLANE_FAKE_SPAN_LOG), and the handoff is the next
generation's start − the previous one's end in the same conversation (the next turn was waiting).
Turn-record timestamps cannot measure it for chatlane: one script stamps turn n's finish and turn
n+1's start with the same Redis time, so they gave 0 by construction.
"""

from __future__ import annotations

import itertools
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from bench.env import Bench, Side, paused
from bench.load import (
    arq_pool,
    arq_results,
    backlog,
    chatlane_spans,
    enqueue_arq,
    enqueue_chatlane,
    wait_arq,
    wait_chatlane,
)
from bench.naive import LOCK_RETRY_DEFER_S, times_key
from bench.report import Row, Sample, fmt
from bench.stats import percentile
from chatlane.messages import decode_messages, turn_id_of
from producer import ChatProducer

ID = "B8"
DELAY_MS = 100
WORKERS = 2
SIDES = ("chatlane", "memory_turn", "locked_turn")


def shape(quick: bool) -> tuple[int, int]:
    return (3, 5) if quick else (10, 10)


@dataclass
class Outcome:
    """What happened to the turns of one session, by enqueue index."""

    expected: list[str]  # turn ids in enqueue order
    failed: set[str]
    history: list[str]  # turn ids of the user messages in the stored history, in order
    spans: dict[str, tuple[float, float]]  # turn id -> (started, finished) ms, committed turns


@dataclass
class Tally:
    lost: int = 0
    reordered: int = 0
    failed: int = 0
    duplicated: int = 0
    overlapping: int = 0
    gaps: list[float] | None = None  # ms between a conversation's generations, at the model

    def add(self, o: Outcome) -> None:
        index = {t: i for i, t in enumerate(o.expected)}
        present = set(o.history)
        self.lost += sum(t not in present and t not in o.failed for t in o.expected)
        self.failed += len(o.failed)
        self.duplicated += len(o.history) - len(present)
        latest = -1
        for t in o.history:
            if index[t] < latest:
                self.reordered += 1
            latest = max(latest, index[t])
        timeline = sorted(o.spans.values())
        for (_, f1), (s2, _) in itertools.pairwise(timeline):
            if s2 < f1:
                self.overlapping += 1

    def add_model_spans(self, log: Path) -> None:
        """Handoffs from the fake model's span log (then emptied for the next run)."""
        by_conversation: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
            first, start, end = line.rsplit("\t", 2)
            by_conversation[first].append((float(start), float(end)))
        log.write_text("")
        self.gaps = self.gaps or []
        for spans in by_conversation.values():
            for (_, e1), (s2, _) in itertools.pairwise(sorted(spans)):
                if s2 < e1:
                    self.overlapping += 1
                else:
                    self.gaps.append((s2 - e1) * 1000)


async def history_ids(redis: Redis, side: Side, session: str) -> list[str]:
    raw: list[str] = await redis.lrange(side.keys.session(session).history, 0, -1)  # type: ignore[misc]
    return [t for m in decode_messages(raw) if m.type == "human" and (t := turn_id_of(m))]


async def run_chatlane(bench: Bench, side: Side, sessions: int, turns: int) -> Tally:
    tally = Tally()
    async with ChatProducer(settings=side.settings) as producer:
        with paused(side):
            ids = await enqueue_chatlane(producer, backlog(sessions, turns, tag="c"))
        await wait_chatlane(bench.redis, side.keys, 120)
        for sid, tids in ids.items():
            spans = await chatlane_spans(bench.redis, side.keys, tids)
            failed = {t for t, s in zip(tids, spans, strict=True) if not s.ok}
            committed = {t: (s.started * 1000, s.finished * 1000) for t, s in zip(tids, spans, strict=True) if s.ok}
            tally.add(Outcome(tids, failed, await history_ids(bench.redis, side, sid), committed))
    return tally


async def run_naive(bench: Bench, side: Side, function: str, sessions: int, turns: int) -> Tally:
    tally = Tally()
    pool = await arq_pool(side)
    try:
        with paused(side):
            jobs = await enqueue_arq(pool, function, backlog(sessions, turns, tag=function[:2]))
        await wait_arq(bench.redis, [j for pairs in jobs.values() for j, _ in pairs], 180)
        times: dict[str, str] = await bench.redis.hgetall(times_key(side.spec.prefix))  # type: ignore[misc]
        for sid, pairs in jobs.items():
            results = await arq_results(bench.redis, [j for j, _ in pairs])
            tids = [t for _, t in pairs]
            failed = {t for t, r in zip(tids, results, strict=True) if r is None or not r.success}
            present = await history_ids(bench.redis, side, sid)
            spans = {t: _span(times[t]) for t in tids if t in times and t not in failed}
            tally.add(Outcome(tids, failed, present, spans))
    finally:
        await pool.aclose()
    return tally


def _span(raw: str) -> tuple[float, float]:
    started, finished = raw.split()
    return float(started), float(finished)


async def measure(bench: Bench, repeats: int) -> list[Sample]:
    sessions, turns = shape(bench.quick)
    logs = {name: Path(tempfile.mkdtemp(prefix="chatlane-b8-")) / "spans.tsv" for name in SIDES}
    specs = [
        bench.chatlane("b8c", count=WORKERS, fake_delay_ms=DELAY_MS, fake_span_log=str(logs["chatlane"])),
        bench.bare_arq("b8m", count=WORKERS, fake_delay_ms=DELAY_MS, fake_span_log=str(logs["memory_turn"])),
        bench.bare_arq("b8l", count=WORKERS, fake_delay_ms=DELAY_MS, fake_span_log=str(logs["locked_turn"])),
    ]
    samples: list[Sample] = []
    async with bench.run(*specs) as sides:
        by_name = dict(zip(SIDES, sides, strict=True))
        for _ in range(repeats):
            s: Sample = {"turns": sessions * turns}
            for name, side in by_name.items():
                with paused(*(o for n, o in by_name.items() if n != name)):
                    if name == "chatlane":
                        t = await run_chatlane(bench, side, sessions, turns)
                    else:
                        t = await run_naive(bench, side, name, sessions, turns)
                t.add_model_spans(logs[name])
                s |= {f"{name}.lost": t.lost, f"{name}.reordered": t.reordered, f"{name}.failed": t.failed,
                      f"{name}.duplicated": t.duplicated, f"{name}.overlapping": t.overlapping,
                      f"{name}.gap_p50": percentile(t.gaps or [], 50),
                      f"{name}.gap_p99": percentile(t.gaps or [], 99)}  # fmt: skip
            samples.append(s)
    return samples


def rows(m: Sample, quick: bool) -> list[Row]:
    def faults(name: str) -> str:
        return (
            f"lost {fmt(m[f'{name}.lost'])}, reordered {fmt(m[f'{name}.reordered'])}, "
            f"failed {fmt(m[f'{name}.failed'])}, duplicated {fmt(m[f'{name}.duplicated'])}"
        )

    def ms(v: float) -> str:
        return fmt(v, " ms", 2) if v < 10 else fmt(v, " ms")

    def handoff(name: str) -> str:
        if m[f"{name}.overlapping"]:
            return f"{fmt(m[f'{name}.overlapping'])} turns overlapped"
        return f"handoff p50 {ms(m[f'{name}.gap_p50'])}, p99 {ms(m[f'{name}.gap_p99'])}"

    sessions, turns = shape(quick)
    burst = f"{sessions} sessions × {turns} turns at once, {WORKERS} workers, delay {DELAY_MS} ms"
    return [
        Row(
            "B8 (i)",
            f"per-request memory, no lock (anti-pattern): {burst}",
            faults("chatlane"),
            f"{faults('memory_turn')}; {handoff('memory_turn')}",
        ),
        Row(
            "B8 (ii)",
            f"arq job per turn + Redis lock + Retry(defer={LOCK_RETRY_DEFER_S:g} s × try), arq's max_tries 5 "
            "(anti-pattern)",
            faults("chatlane"),
            f"{faults('locked_turn')}; {handoff('locked_turn')}",
        ),
        Row("B8", "… handoff between turns of a session, measured at the model", handoff("chatlane")),
    ]
