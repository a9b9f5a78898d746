"""Per-process state of a bare-arq baseline worker (the counterpart of ``worker.runtime``)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from redis.asyncio import Redis

from chatlane.connection import connect
from chatlane.keys import Keys
from chatlane.messages import encode_message, turn_messages
from chatlane.settings import Settings, get_settings
from worker.llm import build_model, stream_reply


@dataclass
class Baseline:
    settings: Settings
    keys: Keys
    redis: Redis
    model: BaseChatModel

    def history_key(self, session_id: str) -> str:
        return self.keys.session(session_id).history

    async def reply(self, window: list[BaseMessage], turn_id: str, text: str) -> tuple[str, str]:
        """Stream the model over the window plus the new message, as chatlane's drain does;
        returns the two encoded history entries the turn adds."""
        messages = [SystemMessage(self.settings.system_prompt), *window, HumanMessage(text)]
        reply = await stream_reply(
            self.model, messages, session_id=turn_id, turn_id=turn_id, attempt=1, on_chunk=_ignore
        )
        user, ai = turn_messages(turn_id, text, reply)
        return encode_message(user), encode_message(ai)


def _ignore(_: str) -> None:
    pass


def baseline(ctx: dict[str, Any]) -> Baseline:
    b: Baseline = ctx["baseline"]
    return b


async def startup(ctx: dict[str, Any]) -> None:
    s = get_settings()
    b = Baseline(s, Keys(s.key_prefix), connect(s), build_model(s))
    ctx["baseline"] = b
    # Registered like a chatlane worker's heartbeat, so the bench knows every process is up.
    await b.redis.zadd(b.keys.workers, {f"baseline.{os.getpid()}": int(time.time() * 1000)})


async def shutdown(ctx: dict[str, Any]) -> None:
    b: Baseline | None = ctx.get("baseline")
    if b is not None:
        await b.redis.aclose()
