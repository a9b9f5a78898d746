"""Summaries of the history that no longer fits the window (``CHATLANE_HISTORY_STRATEGY=summarize``).

A session's summary covers its stored entries before absolute index ``upto`` (absolute: counting
those the history bound trimmed, SessionKeys.trimmed; entries trimmed before the summary reached
them are skipped, never summarized) and is fed as a system message before the window. Once
``CHATLANE_SUMMARY_REFRESH_MESSAGES`` entries have left the window without being covered, the
lease holder has the model fold the oldest of them into the summary, whole turns only and as many
as one request within the window's budget can carry, and stores the result with a fenced script
(``save_summary.lua``). The summary never changes the history (CHATLANE_HISTORY_MAX_MESSAGES
trims it at commit: advance.lua).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.runnables import RunnableConfig

from chatlane.errors import HistoryEntryUnreadable
from chatlane.messages import decode_entry
from worker.handlers import merge_chunks
from worker.window import split_turns

INSTRUCTIONS = (
    "You keep a running summary of a conversation between a user and an assistant. Given the "
    "summary so far and the messages that follow it, write the new summary: the facts, names, "
    "numbers, decisions and open questions a reader needs to continue the conversation. Plain "
    "prose, no preamble, at most {words} words."
)
HEADING = "Summary of the earlier conversation:\n"
# Read this many entries at most per refresh: one request can carry only so much anyway.
READ_AT_MOST = 400


@dataclass(frozen=True)
class Summary:
    upto: int = 0  # the absolute index of the first history entry it does not cover
    text: str = ""

    def message(self) -> SystemMessage | None:
        return SystemMessage(HEADING + self.text) if self.text else None

    @property
    def tokens(self) -> int:
        msg = self.message()
        return count_tokens_approximately([msg]) if msg else 0


class Summarizer:
    def __init__(self, model: BaseChatModel, max_tokens: int) -> None:
        self.model = model
        self.max_tokens = max_tokens
        # A summary may take a quarter of the window's budget (about four characters a token).
        self.max_chars = max_tokens
        self._instructions = SystemMessage(INSTRUCTIONS.format(words=max(20, max_tokens // 8)))

    async def fold(
        self, old: Summary, entries: list[str], config: RunnableConfig
    ) -> tuple[Summary, list[BaseMessage]] | None:
        """The summary of ``old`` plus the whole turns at the start of ``entries`` (the stored entries
        right after ``old.upto``) that fit one request; None if no turn fits."""
        budget = self.max_tokens - count_tokens_approximately([self._instructions, HumanMessage(_body(old.text, ""))])
        lines: list[str] = []
        covered = 0
        for turn in split_turns(_decoded(entries)):
            text = "\n".join(_line(m) for m in turn)
            if count_tokens_approximately([HumanMessage("\n".join([*lines, text]))]) > budget:
                if lines:
                    break
                text = text[: max(0, budget) * 3]  # one turn larger than a request: its start
            lines.append(text)
            covered += len(turn)
        if not covered:
            return None
        request: list[BaseMessage] = [self._instructions, HumanMessage(_body(old.text, "\n".join(lines)))]
        reply = merge_chunks([c async for c in self.model.astream(request, config)])
        return Summary(old.upto + covered, reply.text.strip()[: self.max_chars]), request


def _body(summary: str, transcript: str) -> str:
    return f"Summary so far:\n{summary or '(none)'}\n\nMessages that follow it:\n{transcript}"


def _decoded(entries: list[str]) -> list[BaseMessage]:
    """Entries as messages; one that cannot be decoded is summarized as a placeholder (the turn
    that reads it fails, the summary need not)."""
    out: list[BaseMessage] = []
    for raw in entries:
        try:
            out.append(decode_entry(raw))
        except HistoryEntryUnreadable:
            out.append(ToolMessage("[an unreadable history entry]", tool_call_id=""))
    return out


def _line(m: BaseMessage) -> str:
    if isinstance(m, AIMessage) and m.tool_calls:
        calls = ", ".join(f"{c['name']}({json.dumps(c['args'], ensure_ascii=False)})" for c in m.tool_calls)
        return f"assistant: {m.text} [called {calls}]".replace(":  [", ": [")
    if isinstance(m, ToolMessage):
        return f"tool {m.name or ''}: {m.text}"
    role = {"human": "user", "ai": "assistant"}.get(m.type, m.type)
    return f"{role}: {m.text}"
