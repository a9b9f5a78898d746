"""What the OpenAI chat-completions API does with tool calls, for devkit/openai_stub.py: the
message-order rules it enforces (HTTP 400), and how it streams a tool call.

The rules, as the API words its 400s:
- "messages with role 'tool' must be a response to a preceding message with 'tool_calls'": a tool
  message must come right after the assistant message that made the call (or after other
  results of that message), and answer one of its calls. A request that opens on a tool message
  breaks it too.
- "An assistant message with 'tool_calls' must be followed by tool messages responding to each
  'tool_call_id'".
"""

from __future__ import annotations

import json
from typing import Any

from worker.fake_model import tool_directives

__all__ = ["order_violation", "tool_call_deltas", "tool_calls_message", "tool_directives", "tool_results"]


def order_violation(messages: list[dict[str, Any]]) -> str | None:
    """Why the API would answer 400 to these messages; None if it would not."""
    opening = next((m for m in messages if m.get("role") not in ("system", "developer")), None)
    if opening is not None and opening.get("role") == "tool":
        return "Invalid parameter: the messages open on a message with role 'tool'"
    pending: set[str] = set()
    for i, m in enumerate(messages):
        role = m.get("role")
        if pending:
            if role == "tool" and m.get("tool_call_id") in pending:
                pending.discard(m["tool_call_id"])
                continue
            return _unanswered(pending, i)
        if role == "tool":
            return (
                f"Invalid parameter: messages with role 'tool' must be a response to a preceding message with "
                f"'tool_calls' (messages[{i}], tool_call_id {m.get('tool_call_id')!r})"
            )
        if role == "assistant" and m.get("tool_calls"):
            pending = {c["id"] for c in m["tool_calls"]}
    return _unanswered(pending, len(messages)) if pending else None


def _unanswered(ids: set[str], at: int) -> str:
    return (
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(sorted(ids))} "
        f"(at messages[{at}])"
    )


def tool_call_deltas(calls: list[tuple[str, dict[str, Any]]], n: int, piece: int = 8) -> list[dict[str, Any]]:
    """The stream deltas of an assistant message that calls ``calls``, as the API sends them: per
    call one delta with its index, id, type and name (empty arguments), then the arguments' JSON in
    fragments."""
    deltas: list[dict[str, Any]] = []
    for i, (name, args) in enumerate(calls):
        head: dict[str, Any] = {"index": i, "id": call_id(n, i), "type": "function",
                                "function": {"name": name, "arguments": ""}}  # fmt: skip
        first: dict[str, Any] = {"tool_calls": [head]}
        if i == 0:
            first = {"role": "assistant", "content": None, **first}
        deltas.append(first)
        text = json.dumps(args)
        deltas += [
            {"tool_calls": [{"index": i, "function": {"arguments": text[j : j + piece]}}]}
            for j in range(0, len(text), piece)
        ]
    return deltas


def tool_calls_message(calls: list[tuple[str, dict[str, Any]]], n: int) -> dict[str, Any]:
    """The same assistant message whole (a non-streamed answer)."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id(n, i), "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for i, (name, args) in enumerate(calls)
        ],
    }


def call_id(n: int, i: int) -> str:
    return f"call_stub{n}_{i}"


def tool_results(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(tool name, result) of the tool messages that end the request, names from the calls."""
    names = {
        c["id"]: c["function"]["name"]
        for m in messages
        if m.get("role") == "assistant"
        for c in m.get("tool_calls") or []
    }
    out: list[tuple[str, str]] = []
    for m in reversed(messages):
        if m.get("role") != "tool":
            break
        out.append((names.get(m.get("tool_call_id", ""), "tool"), str(m.get("content"))))
    return out[::-1]
