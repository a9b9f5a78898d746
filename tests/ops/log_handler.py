"""A handler that logs while it answers (``CHATLANE_HANDLER=tests.ops.log_handler:chatty``): its line
passes no ``extra``, so the turn's ids on it come from the drain's log context alone."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from langchain_core.messages import AIMessage, BaseMessage

from worker.turn import Turn

log = logging.getLogger("chatlane.test_handler")


async def chatty(turn: Turn) -> AsyncIterator[str | BaseMessage]:
    log.info("handler answering %r", turn.text)
    if "fail" in turn.text and turn.attempt == 1:
        raise RuntimeError("first attempt fails")
    yield AIMessage("ok")
