"""A session's export: its history and its turns, as JSON (``ChatProducer.export_session``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from chatlane.turns import TurnStatus


class SessionExport(BaseModel):
    format: Literal["chatlane.session.v1"] = "chatlane.session.v1"
    session_id: str
    exported_at: datetime
    history: list[dict[str, Any]] = Field(
        description="the history, oldest first, as stored: LangChain's messages_to_dict shape "
        "(messages_from_dict reads it back); ids are <turn_id>:user / <turn_id>:ai"
    )
    turns: list[TurnStatus] = Field(
        description="every turn of the session whose record is still kept (CHATLANE_TURN_TTL_S), in enqueue order"
    )
