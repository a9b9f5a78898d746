"""A TCP proxy that can partition its clients from the server the way a network does.

``cut()`` stops forwarding in both directions and closes nothing: bytes sent meanwhile wait in
the sockets' buffers, nobody gets an error, and a client's pending command simply never gets an
answer (a proxy that closed connections would tell the client at once, which a real partition
does not). ``heal()`` lets the buffered bytes through, late, as TCP would after a partition.
"""

from __future__ import annotations

import asyncio
import contextlib

from devkit.redis_server import free_port


class BlackholeProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cut(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    async def __aenter__(self) -> BlackholeProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        pipes = [
            asyncio.create_task(self._pipe(client_r, server_w)),
            asyncio.create_task(self._pipe(server_r, client_w)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in pipes:
                t.cancel()
                self._tasks.discard(t)
            for w in (client_w, server_w):
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            # Waiting before the read leaves unread bytes in the kernel's buffers during a cut.
            await self._flowing.wait()
            data = await r.read(65536)
            if not data:
                return
            await self._flowing.wait()
            w.write(data)
            await w.drain()
