"""Checks every accepted turn against chatlane's guarantees, from what Redis holds.

Given the turn ids each session was sent, in enqueue order, it verifies: each turn ended
(G3); completed and interrupted ones are in the history exactly once, each as its user message(s)
(one per text it answers: several when coalesced) then its reply, marked interrupted exactly when
the turn was; failed, cancelled and expired ones not at all (G3); history order is enqueue order
(G2); and no two generation attempts of a session overlap
in time (G1): every attempt, committed or not, as the turn records keep them (``a<n>s`` when it
began, ``a<n>e`` an upper bound of when it stopped; see chatlane/lua/record_attempt.lua), so an
ousted holder that kept generating while the next holder ran is caught. An attempt whose end was
never recorded (its worker was SIGKILLed) cannot be checked and is counted apart. It also
measures how much different sessions overlapped (G5).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from langchain_core.messages import BaseMessage

from chatlane.messages import is_interrupted, turn_id_of
from producer import ChatProducer, TurnNotFound, TurnState, TurnStatus

# Turns whose messages are in the history: the whole reply, or the part of it generated before a stop.
IN_HISTORY = (TurnState.completed, TurnState.interrupted)


@dataclass
class Report:
    sessions: int = 0
    accepted: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    interrupted: int = 0
    expired: int = 0
    unfinished: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    overlapping: int = 0
    unrecorded_ends: int = 0  # attempts whose worker died before it could record their end
    # Overlaps by attempts the caller names as excused: those of a process it paused (SIGSTOP),
    # which cannot close its model call while stopped. Reported, not a violation.
    excused_overlaps: int = 0
    parallel_pairs: int = 0  # pairs of turns of different sessions that ran at the same time
    max_concurrency: int = 0
    violations: list[str] = field(default_factory=list)
    statuses: dict[str, TurnStatus] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order or self.overlapping or self.unfinished)

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("sessions", self.sessions), ("turns accepted", self.accepted), ("completed", self.completed),
            ("failed", self.failed), ("cancelled", self.cancelled), ("interrupted", self.interrupted),
            ("expired", self.expired), ("unfinished", self.unfinished),
            ("lost", self.lost), ("duplicated", self.duplicated), ("out of order", self.out_of_order),
            ("overlapping in a session", self.overlapping), ("peak sessions generating at once", self.max_concurrency),
        ]  # fmt: skip


async def check(producer: ChatProducer, sent: dict[str, list[str]], excused: set[str] | None = None) -> Report:
    """``excused``: attempts ("<turn id>#<attempt>") whose overlaps are expected (paused processes)."""
    r = Report(sessions=len(sent))
    intervals: list[tuple[datetime, datetime, str]] = []
    for session_id, turn_ids in sent.items():
        r.accepted += len(turn_ids)
        statuses: list[TurnStatus] = []
        for tid in turn_ids:
            try:
                st = await producer.status(tid)
            except TurnNotFound:
                r.lost += 1
                r.violations.append(f"{session_id}: turn {tid} has no record")
                continue
            r.statuses[tid] = st
            statuses.append(st)
            if st.state is TurnState.completed:
                r.completed += 1
            elif st.state is TurnState.failed:
                r.failed += 1
                if not st.error:
                    r.violations.append(f"{session_id}: turn {tid} failed without a reason")
            elif st.state is TurnState.cancelled:
                r.cancelled += 1
            elif st.state is TurnState.interrupted:
                r.interrupted += 1
            elif st.state is TurnState.expired:
                r.expired += 1
            else:
                r.unfinished += 1
                r.violations.append(f"{session_id}: turn {tid} still {st.state.value}")

        groups = _groups(await producer.history(session_id))
        for i, (gid, msgs) in enumerate(groups):
            problem = _group_problem(msgs, r.statuses.get(gid or ""))
            if problem:
                r.violations.append(f"{session_id}: turn {gid} (history group {i}): {problem}")
                r.out_of_order += 1
                break
        pairs = [tid for tid, _ in groups]
        counts = Counter(pairs)
        r.duplicated += sum(c - 1 for c in counts.values() if c > 1)
        expected = [st.turn_id for st in statuses if st.state in IN_HISTORY]
        missing = [t for t in expected if t not in counts]
        r.lost += len(missing)
        for t in missing:
            r.violations.append(f"{session_id}: {r.statuses[t].state.value} turn {t} is not in the history")
        extra = [t for t in counts if t not in set(expected)]
        if extra:
            r.violations.append(
                f"{session_id}: history holds turns that neither completed nor were interrupted: {extra}"
            )
            r.duplicated += len(extra)
        dedup = list(dict.fromkeys(pairs))
        if [t for t in dedup if t in set(expected)] != [t for t in expected if t in counts]:
            r.out_of_order += 1
            r.violations.append(f"{session_id}: history order differs from enqueue order")

        spans = await _attempt_spans(producer, [st.turn_id for st in statuses])
        r.unrecorded_ends += sum(1 for _, end, _ in spans if end is None)
        # The latest end seen so far (and whose), apart for excused attempts.
        latest: dict[bool, tuple[int, str]] = {}
        for start, end, who in sorted(spans, key=lambda x: x[0]):
            if False in latest and start < latest[False][0]:
                r.overlapping += 1
                early, other = latest[False][0] - start, latest[False][1]
                r.violations.append(f"{session_id}: generation {who} began {early} ms before {other} ended")
            elif True in latest and start < latest[True][0]:
                r.excused_overlaps += 1
            kind = who in (excused or set())
            if end is not None and (kind not in latest or end > latest[kind][0]):
                latest[kind] = (end, who)
        # A failed turn's last attempt held the session too; both count for the G5 measure.
        intervals.extend(
            (st.started_at, st.finished_at, session_id)
            for st in statuses
            if st.state in (TurnState.completed, TurnState.failed) and st.started_at and st.finished_at
        )

    r.parallel_pairs, r.max_concurrency = _concurrency(intervals)
    return r


def _groups(history: list[BaseMessage]) -> list[tuple[str | None, list[BaseMessage]]]:
    """The history as runs of consecutive messages of one turn."""
    groups: list[tuple[str | None, list[BaseMessage]]] = []
    for m in history:
        tid = turn_id_of(m)
        if groups and groups[-1][0] == tid and groups[-1][1][-1].type == "human":
            groups[-1][1].append(m)
        else:
            groups.append((tid, [m]))
    return groups


def _group_problem(msgs: list[BaseMessage], st: TurnStatus | None) -> str | None:
    """What is wrong with one turn's run of history entries, if anything."""
    if len(msgs) < 2 or msgs[-1].type != "ai" or any(m.type != "human" for m in msgs[:-1]):
        return "not its user message(s) followed by one reply"
    if st is None:
        return None  # not a turn the caller sent: counted as extra below
    if [m.text for m in msgs[:-1]] != st.texts:
        return f"its user messages are not the {len(st.texts)} text(s) the turn answers"
    if is_interrupted(msgs[-1]) != (st.state is TurnState.interrupted):
        return f"reply {'marked' if is_interrupted(msgs[-1]) else 'not marked'} interrupted, turn {st.state.value}"
    return None


async def _attempt_spans(producer: ChatProducer, turn_ids: list[str]) -> list[tuple[int, int | None, str]]:
    """(start ms, end ms or None, "<turn>#<attempt>") of every recorded generation attempt."""
    async with producer.redis.pipeline(transaction=False) as pipe:
        for tid in turn_ids:
            pipe.hgetall(producer.keys.turn(tid))
        records: list[dict[str, str]] = await pipe.execute()
    spans: list[tuple[int, int | None, str]] = []
    for tid, rec in zip(turn_ids, records, strict=True):
        for n in range(1, int(rec.get("attempts", 0)) + 1):
            start = rec.get(f"a{n}s")
            if start is not None:
                end = rec.get(f"a{n}e")
                spans.append((int(start), int(end) if end is not None else None, f"{tid}#{n}"))
    return spans


def _concurrency(intervals: list[tuple[datetime, datetime, str]]) -> tuple[int, int]:
    events = sorted([(s, 1) for s, _, _ in intervals] + [(f, -1) for _, f, _ in intervals])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    pairs = 0
    by_start = sorted(intervals)
    for i, (_s1, f1, a) in enumerate(by_start):
        for s2, _f2, b in by_start[i + 1 :]:
            if s2 >= f1:
                break
            pairs += a != b
    return pairs, peak
