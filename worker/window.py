"""The history window a drain feeds the model: the newest whole turns that fit a token budget.

The window is cut only at turn boundaries (before a turn's user message), never inside a turn:
so it never opens on a tool result, and never separates an AI message's tool calls from their
results. An OpenAI-compatible server rejects both with HTTP 400. A turn whose stored messages
break those rules by themselves (a handler that returned tool calls without their results) is fed
with the unanswered calls left out; what is stored is never changed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.messages.utils import count_tokens_approximately
from redis.asyncio import Redis

from chatlane.errors import HistoryEntryUnreadable
from chatlane.messages import decode_entry, is_turn_start

# History entries read first; claim.lua returns them together with the lease.
FIRST_BATCH = 32


@dataclass(frozen=True)
class Group:
    """One turn's entries as fed to the model."""

    messages: list[BaseMessage]
    tokens: int
    entries: int  # how many stored history entries it stands for

    @classmethod
    def of(cls, stored: Sequence[BaseMessage]) -> Group:
        fed = feedable(stored)
        # Each message is counted once, when it enters. Re-trimming the whole window with
        # trim_messages after every turn re-counted it many times over (a binary search over
        # prefixes): a third of a busy worker's CPU in bench B1b.
        return cls(fed, sum(count_tokens_approximately([m]) for m in fed), len(stored))

    @property
    def opens_turn(self) -> bool:
        return bool(self.messages) and is_turn_start(self.messages[0])


class Window:
    """The newest whole turns whose messages fit ``max_tokens`` and, if ``max_entries`` (the history
    bound, CHATLANE_HISTORY_MAX_MESSAGES) is set, stand for at most that many stored entries: so a
    runner's window never holds what the commit just trimmed (trim_history.lua cuts at the same turn
    boundary, or inside the newest turn, which the window then leaves out as a reload would)."""

    def __init__(self, max_tokens: int, groups: Iterable[Group] = (), max_entries: int = 0) -> None:
        self.max_tokens = max_tokens
        self.max_entries = max_entries
        self._groups: deque[Group] = deque()
        self._tokens = 0
        self.entries = 0  # stored entries the window stands for (it ends at the history's end)
        for g in groups:
            self._push(g)
        self._fit()

    @property
    def messages(self) -> list[BaseMessage]:
        return [m for g in self._groups for m in g.messages]

    @property
    def tokens(self) -> int:
        return self._tokens

    def extend(self, stored: Iterable[BaseMessage]) -> None:
        """Entries just appended to the history, in order (usually one turn's)."""
        for turn in split_turns(stored):
            self._push(Group.of(turn))
        self._fit()

    def resize(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._fit()

    def _push(self, g: Group) -> None:
        self._groups.append(g)
        self._tokens += g.tokens
        self.entries += g.entries

    def _fit(self) -> None:
        while self._groups and (
            self._tokens > self.max_tokens or not self._groups[0].opens_turn or 0 < self.max_entries < self.entries
        ):
            g = self._groups.popleft()
            self._tokens -= g.tokens
            self.entries -= g.entries


def split_turns(stored: Iterable[BaseMessage]) -> list[list[BaseMessage]]:
    """Consecutive entries grouped by turn: each group starts at a turn's user message (the first
    may not, if ``stored`` begins inside a turn)."""
    turns: list[list[BaseMessage]] = []
    for m in stored:
        if is_turn_start(m) or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    return turns


def feedable(turn: Sequence[BaseMessage]) -> list[BaseMessage]:
    """``turn`` as a model may be given it: every AI message's tool calls answered by the tool
    messages right after it. Calls without an answer there are left out (an AI message left with
    nothing is dropped), and so are tool messages that answer no such call."""
    out: list[BaseMessage | None] = []
    calling: int | None = None  # index in `out` of the AI message whose results may follow
    open_ids: set[str] = set()
    answered: set[str] = set()

    def close() -> None:
        nonlocal calling
        ai = out[calling] if calling is not None else None
        if isinstance(ai, AIMessage) and open_ids - answered:
            out[calling] = _with_calls(ai, answered)  # type: ignore[index]
        calling = None

    for m in turn:
        if isinstance(m, ToolMessage):
            if calling is not None and m.tool_call_id in open_ids - answered:
                answered.add(m.tool_call_id)
                out.append(m)
            continue
        close()
        out.append(m)
        if isinstance(m, AIMessage) and (ids := _call_ids(m)):
            calling, open_ids, answered = len(out) - 1, ids, set()
    close()
    return [m for m in out if m is not None]


def _call_ids(m: AIMessage) -> set[str]:
    return {c["id"] or "" for c in m.tool_calls} | {c["id"] or "" for c in m.invalid_tool_calls}


def _with_calls(m: AIMessage, keep: set[str]) -> AIMessage | None:
    """``m`` with only the tool calls in ``keep``; None if nothing is left of it."""
    calls = [c for c in m.tool_calls if c["id"] in keep]
    invalid = [c for c in m.invalid_tool_calls if c["id"] in keep]
    if not calls and not invalid and not m.content:
        return None
    # langchain-openai sends additional_kwargs["tool_calls"] when the message has no tool calls
    # of its own: leave no copy of the dropped ones there.
    extra = {k: v for k, v in m.additional_kwargs.items() if k not in ("tool_calls", "function_call")}
    return m.model_copy(update={"tool_calls": calls, "invalid_tool_calls": invalid, "additional_kwargs": extra})


async def load_window(
    redis: Redis, key: str, max_tokens: int, newest: list[str] | None = None, max_entries: int = 0
) -> Window:
    """Read the history from its end, in growing batches, until the budget is covered.

    ``newest``: the last ``FIRST_BATCH`` entries, if the caller has them already. Messages are
    decoded newest first and only while their turns fit, so the cost depends on the window, not
    on the length of the history (decoding everything a batch read was 1.3× the turn latency
    with a long history, bench B5). Raises HistoryEntryUnreadable for an entry it had to read.
    """
    groups: list[Group] = []  # newest first
    turn: list[BaseMessage] = []  # the turn being read, newest message first
    tokens, loaded, batch = 0, 0, FIRST_BATCH
    raw = newest
    while True:
        if raw is None:
            raw = await redis.lrange(key, -(loaded + batch), -(loaded + 1))  # type: ignore[misc]
        for back, entry in enumerate(reversed(raw), loaded + 1):
            try:
                msg = decode_entry(entry)
            except HistoryEntryUnreadable as e:
                total: int = await redis.llen(key)  # type: ignore[misc]
                raise HistoryEntryUnreadable(total - back, e.reason) from e
            turn.append(msg)
            if not is_turn_start(msg):
                continue
            g = Group.of(turn[::-1])
            if tokens + g.tokens > max_tokens:
                return Window(max_tokens, reversed(groups), max_entries)
            groups.append(g)
            tokens += g.tokens
            turn = []
        if len(raw) < batch:
            return Window(max_tokens, reversed(groups), max_entries)
        loaded += len(raw)
        # Read about as many more as the budget still needs at the size seen so far (a fixed
        # x4 growth read ~90 KB to use ~8 KB with chat-sized messages, bench B5), never fewer
        # than 8 nor more than 4x the last batch.
        needed = (max_tokens - tokens) * loaded / max(tokens, 1)
        batch = max(8, min(batch * 4, int(needed * 1.25) + 1))
        raw = None
