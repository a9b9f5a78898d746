"""The turn contract, as a handler sees it: what a turn gets, and where it streams to.

A turn takes the history window plus the new user message and gives back the messages it adds
(a chat model: its reply; an agent: AI tool calls, tool results, the answer). The drain commits
them together with the user message in one fenced script: all or nothing, exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig

from chatlane.stream import ToolEvent, ToolPhase
from chatlane.tenants import DEFAULT_TENANT, SessionRef


@dataclass(frozen=True)
class Turn:
    """What a handler gets for one attempt of a turn."""

    session_id: str  # as the tenant named it (one tenant's "alice" is not another's)
    turn_id: str
    attempt: int  # 1 for the first try; a retry runs the turn again from the same window
    user: HumanMessage  # the new user message
    # The history to answer from, oldest first: a summary of older history as a SystemMessage when
    # CHATLANE_HISTORY_STRATEGY=summarize has one, then the newest whole turns that fit
    # CHATLANE_HISTORY_MAX_TOKENS. It never opens inside a turn, so never on a tool result, and an
    # AI message's tool calls are always followed by their results.
    window: list[BaseMessage]
    metadata: dict[str, Any] = field(default_factory=dict)  # given at enqueue ({} if none)
    # metadata: session_id, turn_id, attempt and the turn's metadata; configurable: thread_id
    config: RunnableConfig = field(default_factory=lambda: RunnableConfig())
    # The texts sent after ``user`` that joined this turn (on_busy=coalesce), each its own user
    # message, in order; the turn's one answer replies to all of them.
    joined: list[HumanMessage] = field(default_factory=list)
    tenant: str = DEFAULT_TENANT  # whose session it is (README "Tenants and quotas")

    @property
    def messages(self) -> list[BaseMessage]:
        """The window, then the user message(s): what a chat model or an agent is given."""
        return [*self.window, self.user, *self.joined]

    @property
    def text(self) -> str:
        return self.user.text


def run_config(
    *, session_id: str, turn_id: str, attempt: int, metadata: dict[str, Any] | None = None
) -> RunnableConfig:
    """The LangChain config of one attempt: callbacks, tracing and tools see which turn it is.
    ``session_id`` is the scoped id the worker serves (chatlane/tenants.py SessionRef): metadata
    gets the tenant and its own session id; ``thread_id`` (a checkpointer's key) is the scoped id, so
    two tenants' sessions of one name never share a thread. chatlane's keys win over the turn's
    metadata keys of the same name."""
    ref = SessionRef.parse(session_id)
    return {
        "metadata": {
            **(metadata or {}), "session_id": ref.session_id, "tenant": ref.tenant, "turn_id": turn_id,
            "attempt": attempt,
        },
        "configurable": {"thread_id": session_id},
    }  # fmt: skip


class Emitter(Protocol):
    """Where a handler's live output goes: the turn's token stream (worker/publish.py)."""

    def text(self, text: str) -> None: ...

    def tool(self, event: ToolEvent) -> None: ...


class ToolEvents:
    """Turns the messages of a turn into ``tool`` stream events, once per call and phase."""

    def __init__(self, emit: Emitter) -> None:
        self._emit = emit
        self._names: dict[str, str] = {}  # call id -> tool name, for results that do not say it

    def seen(self, msg: BaseMessage) -> None:
        if isinstance(msg, AIMessage):
            for call in [*msg.tool_calls, *msg.invalid_tool_calls]:
                call_id, name = call.get("id") or "", call.get("name") or ""
                self._names[call_id] = name
                self._emit.tool(ToolEvent(name, call_id, ToolPhase.call))
        elif isinstance(msg, ToolMessage):
            name = msg.name or self._names.get(msg.tool_call_id, "")
            self._emit.tool(ToolEvent(name, msg.tool_call_id, ToolPhase.result))
