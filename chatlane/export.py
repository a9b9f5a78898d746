"""A session's export: its history and its turns, as JSON (``ChatProducer.export_session``), and
what an import (``ChatProducer.import_session``) writes back from it.

An import restores what the conversation needs to go on: the history (each entry exactly as
exported, absolute indexes included) and the summary. Turn records are not imported: a turn id
names a key of its own, fleet-wide (``chatlane:turn:<id>``), which the original session or a second
import would share, and its token stream, idempotency key and webhook log are not in the export.
The history keeps every message's link to the turn that wrote it (ids ``<turn_id>:user``,
``<turn_id>:<n>``), and ``turns`` in the export stays the record of what happened.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from chatlane.errors import HistoryEntryUnreadable, InvalidInput
from chatlane.messages import decode_entry
from chatlane.turns import TurnStatus


class ExportedSummary(BaseModel):
    upto: int = Field(ge=0, description="absolute index: the summary stands for the history before it")
    text: str


class SessionExport(BaseModel):
    format: Literal["chatlane.session.v1"] = "chatlane.session.v1"
    session_id: str
    exported_at: datetime
    history: list[dict[str, Any]] = Field(
        description="the history, oldest first, as stored: LangChain's messages_to_dict shape "
        "(messages_from_dict reads it back); ids are <turn_id>:user / <turn_id>:<n>"
    )
    history_start: int = Field(
        0, ge=0, description="absolute index of history[0]: how many older messages retention trimmed"
    )
    summary: ExportedSummary | None = Field(None, description="CHATLANE_HISTORY_STRATEGY=summarize: the summary")
    turns: list[TurnStatus] = Field(
        description="every turn of the session whose record is still kept (CHATLANE_TURN_TTL_S), in enqueue "
        "order; an import does not bring these back (chatlane/export.py says why)"
    )

    def stored_entries(self) -> list[str]:
        """The history as the entries an import stores; raises InvalidInput, naming the entry, if one
        is not a message chatlane can read. Each is stored as chatlane writes its own (compact JSON,
        "type" first, the id last: the retention trim reads them so, trim_history.lua), which is the
        same object, so an export of the imported session has the same history."""
        out: list[str] = []
        for i, entry in enumerate(self.history):
            data = entry.get("data")
            if not isinstance(data, dict) or not isinstance(entry.get("type"), str):
                raise InvalidInput(f"history[{i}] is not a {{'type', 'data'}} message object")
            ordered = {k: v for k, v in data.items() if k != "id"}
            if "id" in data:
                ordered["id"] = data["id"]
            raw = json.dumps({"type": entry["type"], "data": ordered}, separators=(",", ":"), ensure_ascii=False)
            try:
                decode_entry(raw, i)
            except HistoryEntryUnreadable as e:
                raise InvalidInput(f"history[{i}] cannot be imported: {e.reason}") from e
            out.append(raw)
        if self.summary is not None and self.summary.upto > self.history_start + len(self.history):
            raise InvalidInput("summary.upto is past the end of the history")
        return out


class SessionImported(BaseModel):
    session_id: str
    messages: int = Field(description="history messages stored")
    trimmed: int = Field(description="of those given, the oldest trimmed at once (CHATLANE_HISTORY_MAX_MESSAGES)")
