"""``HttpChatClient``: chatlane over its HTTP API, the way a service in another language uses it.

Used by the demo's ``--http`` mode, the HTTP tests and the HTTP benchmark. Errors come back as
``HttpApiError`` carrying the API's status and stable ``code``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from chatlane.errors import ChatlaneError, WaitTimeout
from chatlane.turns import TurnStatus


class HttpApiError(ChatlaneError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None = None


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[SseEvent]:
    """Events of a ``text/event-stream`` (the subset the API sends: id, event, data; comments)."""
    event, eid = "message", None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data), eid)
            event, data, eid = "message", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            eid = value


def transport() -> httpx.AsyncHTTPTransport:
    # Explicit TCP_NODELAY: a small request must not wait for the previous segment's ACK.
    return httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])


class HttpChatClient:
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport())

    async def __aenter__(self) -> HttpChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def enqueue(
        self,
        session_id: str,
        text: str,
        *,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        on_busy: str | None = None,
    ) -> TurnStatus:
        body: dict[str, Any] = {"text": text}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if metadata is not None:
            body["metadata"] = metadata
        if on_busy is not None:
            body["on_busy"] = on_busy
        resp = await self._http.post(f"/v1/sessions/{session_id}/turns", json=body)
        return TurnStatus.model_validate_json(_checked(resp).content)

    async def cancel(self, turn_id: str, *, keep_partial: bool = True) -> TurnStatus:
        resp = await self._http.post(f"/v1/turns/{turn_id}/cancel", json={"keep_partial": keep_partial})
        return TurnStatus.model_validate_json(_checked(resp).content)

    async def turns(self, session_id: str, states: str = "queued,running") -> list[TurnStatus]:
        resp = await self._http.get(f"/v1/sessions/{session_id}/turns", params={"state": states})
        return [TurnStatus.model_validate(t) for t in _checked(resp).json()["turns"]]

    async def status(self, turn_id: str) -> TurnStatus:
        resp = await self._http.get(f"/v1/turns/{turn_id}")
        return TurnStatus.model_validate_json(_checked(resp).content)

    async def events(self, turn_id: str, last_event_id: str | None = None) -> AsyncIterator[SseEvent]:
        """The turn's SSE events until ``end`` (or ``error``); see producer/sse.py for their format."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        # Reads may idle up to the server's keepalive interval (15 s).
        timeout = httpx.Timeout(10.0, read=60.0)
        async with self._http.stream("GET", f"/v1/turns/{turn_id}/stream", headers=headers, timeout=timeout) as resp:
            if resp.status_code != 200:
                await resp.aread()
                _checked(resp)
            async for ev in parse_sse(resp.aiter_lines()):
                yield ev

    async def wait(self, turn_id: str, timeout: float) -> TurnStatus:
        """Wait for the turn's end, long-polling on its event stream; resumes after a dropped stream."""
        deadline = time.monotonic() + timeout
        st = await self.status(turn_id)
        last: str | None = None
        try:
            async with asyncio.timeout(timeout):
                while not st.state.terminal:
                    try:
                        async for ev in self.events(turn_id, last):
                            last = ev.id or last
                            if ev.event == "end":
                                return TurnStatus.model_validate_json(ev.data)
                    except httpx.TransportError:
                        pass
                    # The stream ended without `end` (server error event, restart): check, retry.
                    await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
                    st = await self.status(turn_id)
        except TimeoutError:
            raise WaitTimeout(f"turn {turn_id} did not end within {timeout:g}s") from None
        return st


def _checked(resp: httpx.Response) -> httpx.Response:
    if resp.status_code < 400:
        return resp
    try:
        body = resp.json()
        code, message = str(body["code"]), str(body.get("message", ""))
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", resp.text[:200]
    raise HttpApiError(resp.status_code, code, message)
