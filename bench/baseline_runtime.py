"""Per-process state of a bare-arq baseline worker (the counterpart of ``worker.runtime``)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from redis.asyncio import Redis

from chatlane.connection import connect
from chatlane.keys import Keys
from chatlane.messages import encode_message, turn_messages
from chatlane.settings import Settings, get_settings
from chatlane.stream import ToolEvent
from worker.handlers import ChatModelHandler
from worker.llm import build_model
from worker.turn import Turn, run_config


@dataclass
class Baseline:
    settings: Settings
    keys: Keys
    redis: Redis
    handler: ChatModelHandler

    def history_key(self, session_id: str) -> str:
        return self.keys.session(session_id).history

    async def reply(self, window: list[BaseMessage], turn_id: str, text: str) -> tuple[str, str]:
        """Stream the model over the window plus the new message, as chatlane's drain does;
        returns the two encoded history entries the turn adds."""
        config = run_config(session_id=turn_id, turn_id=turn_id, attempt=1)
        turn = Turn(turn_id, turn_id, 1, HumanMessage(text), window, config=config)
        user, ai = turn_messages(turn_id, text, await self.handler.run(turn, _Ignore()))
        return encode_message(user), encode_message(ai)


class _Ignore:
    def text(self, text: str) -> None:
        pass

    def tool(self, event: ToolEvent) -> None:
        pass


def baseline(ctx: dict[str, Any]) -> Baseline:
    b: Baseline = ctx["baseline"]
    return b


async def startup(ctx: dict[str, Any]) -> None:
    s = get_settings()
    b = Baseline(s, Keys(s.key_prefix), connect(s), ChatModelHandler(build_model(s), s.system_prompt))
    ctx["baseline"] = b
    # Registered like a chatlane worker's heartbeat, so the bench knows every process is up.
    await b.redis.zadd(b.keys.workers, {f"baseline.{os.getpid()}": int(time.time() * 1000)})


async def shutdown(ctx: dict[str, Any]) -> None:
    b: Baseline | None = ctx.get("baseline")
    if b is not None:
        await b.redis.aclose()
