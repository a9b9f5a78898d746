"""A worker's start-up checks, run before arq starts: settings and the Redis URL, the handler (or
chat model) that will run the turns, then Redis itself. A mistake ends the process with one line
on stderr (``chatlane worker: ...``) and exit status 2; a Redis that is not up yet is waited for.
"""

from __future__ import annotations

import asyncio
import logging

from chatlane.settings import Settings
from chatlane.startup import StartupError, check_redis, check_redis_url, fail
from worker.handler_loader import load_handler, model_of
from worker.handlers import ChatModelHandler, TurnHandler

log = logging.getLogger("chatlane.worker")

PROGRAM = "chatlane worker"


def prepare(settings: Settings, handler: object | None) -> TurnHandler:
    """The loaded handler, once every check has passed. Runs on a new event loop, left current
    for arq's Worker: a handler factory may open clients bound to it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_checks(settings, handler))
    except StartupError as e:
        fail(PROGRAM, e)


async def _checks(settings: Settings, handler: object | None) -> TurnHandler:
    check_redis_url(settings)
    turn_handler = load_handler(settings, handler)
    if settings.history_strategy == "summarize" and not isinstance(turn_handler, ChatModelHandler):
        # Summaries are then written by CHATLANE_MODEL's model: it must be buildable too.
        model_of(settings)
    await check_redis(settings, log, wait=True)
    return turn_handler
