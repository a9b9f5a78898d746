"""Handlers the tests start workers with (``CHATLANE_HANDLER=tests.handlers:<name>``)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any, TypedDict

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.tools import tool
from langgraph.graph import StateGraph

from chatlane.settings import get_settings
from devkit.agent_example import add
from worker.llm import build_model
from worker.turn import Turn

FACTORY_LOG = "CHATLANE_TEST_FACTORY_LOG"


async def echo(turn: Turn) -> AsyncIterator[str | BaseMessage]:
    """Streams two chunks, then answers with what it was given, as JSON."""
    yield "echo "
    yield "of "
    seen = {
        "metadata": turn.metadata,
        "config_metadata": (turn.config.get("metadata") or {}),
        "thread_id": (turn.config.get("configurable") or {}).get("thread_id"),
        "session_id": turn.session_id,
        "tenant": turn.tenant,
        "turn_id": turn.turn_id,
        "attempt": turn.attempt,
        "window": [m.type for m in turn.window],
        "user": turn.text,
    }
    yield AIMessage(json.dumps(seen, sort_keys=True))


def counted_echo() -> Any:
    """A factory: records each call (pid) in the file $CHATLANE_TEST_FACTORY_LOG."""
    with open(os.environ[FACTORY_LOG], "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")
    return echo


@tool
async def wait(ms: int) -> str:
    """Wait ``ms`` milliseconds, then say so."""
    await asyncio.sleep(ms / 1000)
    return f"waited {ms} ms"


def slow_agent() -> Any:
    """An agent whose `wait` tool takes as long as it is asked to (for a kill between a tool call
    and the answer)."""
    return create_agent(build_model(get_settings()), [add, wait], system_prompt="Use the tools.")


class _NoMessages(TypedDict):
    count: int


def graph_without_messages() -> Any:
    g = StateGraph(_NoMessages)
    g.add_node("inc", lambda s: {"count": s["count"] + 1})
    g.set_entry_point("inc")
    return g.compile()


not_a_handler = 42


def takes_arguments(x: int) -> int:
    return x


def broken_factory() -> Any:
    raise RuntimeError("no credentials for the model")


async def returns_instead_of_yielding(turn: Turn) -> str:
    return "oops"
