"""An asyncio TCP server on loopback with an event loop and thread of its own, so a busy event loop
in the measuring process does not slow it down (devkit/link.py, devkit/strip_proxy.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ThreadServer:
    def __init__(self, serve: Serve, name: str, host: str = "127.0.0.1", port: int = 0, limit: int = 2**16) -> None:
        self.host = host
        self.port = port  # 0: any free one, known once started
        self._serve = serve
        self._limit = limit
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self._thread.name} did not start")

    def stop(self, before: Callable[[], None] | None = None) -> None:
        """Stop the loop (running ``before`` in it first) and cancel its connections' tasks."""

        def stop() -> None:
            if before is not None:
                before()
            self.loop.stop()

        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(stop)
            self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, self.host, self.port, limit=self._limit)
        )
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        self.loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self.loop)
        for t in tasks:
            t.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()
