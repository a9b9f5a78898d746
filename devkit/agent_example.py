"""An agent with two tools, for the demo (``make demo ARGS=--agent``) and the tests.

Run a worker with it: ``CHATLANE_HANDLER=devkit.agent_example:make_agent python -m worker``. Its
model is the one ``CHATLANE_MODEL`` names: the offline fake by default (which calls a tool when
the text says ``!tool=add:{"a": 2, "b": 3}`` or ``!tool=lookup:{"term": "lease"}``), or any
OpenAI-compatible model, e.g. ``openai:gpt-4o-mini`` against devkit/openai_stub.py.
"""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool

from chatlane.settings import get_settings
from worker.llm import build_model

# What CHATLANE_HANDLER names to run this agent.
HANDLER = "devkit.agent_example:make_agent"

GLOSSARY = {
    "lease": "the right to serve a session, held by one worker at a time and renewed while it works",
    "fence": "the lease token every write checks, so a worker that lost its lease cannot write",
    "drain": "the job that serves a session's waiting turns in order while holding its lease",
}


@tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@tool
def lookup(term: str, config: RunnableConfig) -> str:
    """Look a chatlane term up in the glossary."""
    meta = config.get("metadata") or {}
    meaning = GLOSSARY.get(term.lower(), "not in the glossary")
    # The turn's metadata reaches tools through the run's config, e.g. who is asking.
    asker = f" (asked by {meta['user']})" if "user" in meta else ""
    return f"{term}: {meaning}{asker}"


def make_agent() -> Any:
    """A factory: called once per worker process, at start-up."""
    return create_agent(
        build_model(get_settings()),
        [add, lookup],
        system_prompt="Answer briefly. Use add for arithmetic and lookup for chatlane terms.",
    )
