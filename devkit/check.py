"""Checks every accepted turn against chatlane's guarantees, from what Redis holds.

Given the turn ids each session was sent, in enqueue order, it verifies: each turn ended
(G3), completed ones are in the history exactly once, whole (their user message(s): one per text
it answers, several when coalesced; then every message the turn added: as many entries as the
commit recorded on the turn, ``entries``), interrupted ones likewise with their partial reply
marked interrupted (and only they are marked), and failed, cancelled and expired ones not at all
(G3), every tool-call group is well formed (an AI message's tool calls
answered right after it, each exactly once, and the turn ending with an AI message: user ->
AI(tool_calls) -> tool results -> AI answer), history order is enqueue order (G2), and no two
generation attempts of a session overlap
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

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from chatlane.errors import HistoryEntryUnreadable
from chatlane.messages import is_interrupted, is_turn_start, turn_id_of
from producer import ChatProducer, TurnNotFound, TurnState, TurnStatus

# Turns whose entries are in the history: the whole reply, or what was generated before a stop.
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
    partial: int = 0  # turns in the history with fewer or more entries than their commit wrote
    malformed_tool_groups: int = 0  # tool calls not answered right after them, or answered twice
    tool_calls: int = 0  # tool calls in the checked histories (all answered, unless malformed)
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
        return not (
            self.lost or self.duplicated or self.out_of_order or self.overlapping or self.unfinished or self.partial
            or self.malformed_tool_groups
        )  # fmt: skip

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("sessions", self.sessions), ("turns accepted", self.accepted), ("completed", self.completed),
            ("failed", self.failed), ("cancelled", self.cancelled), ("interrupted", self.interrupted),
            ("expired", self.expired), ("unfinished", self.unfinished),
            ("lost", self.lost), ("duplicated", self.duplicated), ("out of order", self.out_of_order),
            ("half turns", self.partial), ("malformed tool-call groups", self.malformed_tool_groups),
            ("tool calls in history", self.tool_calls), ("overlapping in a session", self.overlapping),
            ("peak sessions generating at once", self.max_concurrency),
        ]  # fmt: skip


async def check(
    producer: ChatProducer,
    sent: dict[str, list[str]],
    excused: set[str] | None = None,
    *,
    open_tool_calls: bool = False,
) -> Report:
    """``excused``: attempts ("<turn id>#<attempt>") whose overlaps are expected (paused processes).
    ``open_tool_calls``: a turn may end with unanswered tool calls (a handler that returns them)."""
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

        records = await _records(producer, [st.turn_id for st in statuses])
        try:
            history = await producer.history(session_id)
        except HistoryEntryUnreadable as e:
            r.violations.append(f"{session_id}: {e}")
            r.lost += 1
            continue
        runs = _runs(history)
        counts = Counter(t for t, _ in runs)
        r.duplicated += sum(c - 1 for c in counts.values() if c > 1)
        for t, group in runs:
            problem = _group_problem(group, records.get(t or ""), open_tool_calls) or _steered_problem(
                group, r.statuses.get(t or "")
            )
            r.tool_calls += sum(len(m.tool_calls) for m in group if isinstance(m, AIMessage))
            if problem is None:
                continue
            r.violations.append(f"{session_id}: turn {t}: {problem}")
            if problem.startswith("tool"):
                r.malformed_tool_groups += 1
            else:
                r.partial += 1
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
        dedup = list(dict.fromkeys(t for t, _ in runs))
        if [t for t in dedup if t in set(expected)] != [t for t in expected if t in counts]:
            r.out_of_order += 1
            r.violations.append(f"{session_id}: history order differs from enqueue order")

        spans = _attempt_spans(records)
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


async def _records(producer: ChatProducer, turn_ids: list[str]) -> dict[str, dict[str, str]]:
    async with producer.redis.pipeline(transaction=False) as pipe:
        for tid in turn_ids:
            pipe.hgetall(producer.keys.turn(tid))
        records: list[dict[str, str]] = await pipe.execute()
    return dict(zip(turn_ids, records, strict=True))


def _attempt_spans(records: dict[str, dict[str, str]]) -> list[tuple[int, int | None, str]]:
    """(start ms, end ms or None, "<turn>#<attempt>") of every recorded generation attempt."""
    spans: list[tuple[int, int | None, str]] = []
    for tid, rec in records.items():
        for n in range(1, int(rec.get("attempts", 0)) + 1):
            start = rec.get(f"a{n}s")
            if start is not None:
                end = rec.get(f"a{n}e")
                spans.append((int(start), int(end) if end is not None else None, f"{tid}#{n}"))
    return spans


def _runs(history: list[BaseMessage]) -> list[tuple[str | None, list[BaseMessage]]]:
    """The history as consecutive runs of one turn's entries."""
    runs: list[tuple[str | None, list[BaseMessage]]] = []
    for m in history:
        t = turn_id_of(m)
        if runs and runs[-1][0] == t and not is_turn_start(m):
            runs[-1][1].append(m)
        else:
            runs.append((t, [m]))
    return runs


def _group_problem(group: list[BaseMessage], record: dict[str, str] | None, open_tool_calls: bool) -> str | None:
    """What is wrong with one turn's entries, or None. Problems with tool calls start with "tool"."""
    if not is_turn_start(group[0]) or group[0].type != "human":
        return "its entries do not start with its user message"
    written = (record or {}).get("entries")
    if written is not None and len(group) != int(written):
        return f"{len(group)} entries in the history, but its commit wrote {written} (a half turn)"
    if len(group) < 2:
        return "its user message has nothing after it"
    open_calls: set[str] = set()
    answered: set[str] = set()
    for m in group[1:]:
        if isinstance(m, ToolMessage):
            if m.tool_call_id not in open_calls or m.tool_call_id in answered:
                return f"tool result {m.tool_call_id!r} answers no call right before it (or answers it twice)"
            answered.add(m.tool_call_id)
            continue
        if open_calls - answered:
            return f"tool calls {sorted(open_calls - answered)} are not answered right after them"
        open_calls, answered = ({c["id"] or "" for c in m.tool_calls} if isinstance(m, AIMessage) else set()), set()
    if open_calls - answered and not open_tool_calls:
        return f"tool calls {sorted(open_calls - answered)} end the turn unanswered"
    if not isinstance(group[-1], AIMessage) and not (open_tool_calls and open_calls):
        return "tool results end the turn: no answer after them"
    return None


def _steered_problem(group: list[BaseMessage], st: TurnStatus | None) -> str | None:
    """What is wrong with a turn's entries as its user messages and its stop say, or None: they open
    with one user message per text it answers, and only an interrupted turn's reply is marked."""
    if st is None:
        return None  # not a turn the caller sent: counted as extra
    users = [m.text for m in group[: len(st.texts)] if m.type == "human"]
    if users != st.texts or (len(group) > len(st.texts) and group[len(st.texts)].type == "human"):
        return f"its user messages are not the {len(st.texts)} text(s) the turn answers"
    marked = [m for m in group if is_interrupted(m)]
    if st.state is TurnState.interrupted and marked != group[-1:]:
        return "an interrupted turn whose last entry is not its reply marked interrupted"
    if st.state is not TurnState.interrupted and marked:
        return f"a reply marked interrupted in a {st.state.value} turn"
    return None


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
