"""A TCP link that can be cut: a forwarder on loopback that, once cut, forwards nothing and closes
nothing, as a network that drops packets (a partition, or a host that died mid-transfer).

A killed process on loopback is a gentle death: its kernel still delivers what the process had
written and then closes the connections. A host that loses power or its network delivers
nothing more and closes nothing. A replica that reaches its primary through a ``Link`` can be
made to see the latter. The forwarder runs in a thread of its own, so a busy event loop in the
measuring process does not slow replication down.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Link:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self._cut = False
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, name=f"link-{target_port}", daemon=True)

    def start(self) -> Link:
        self._thread.start()
        self._ready.wait(10)
        return self

    def retarget(self, port: int) -> None:
        """New connections go to ``port``; open ones stay where they are (as behind a DNS name or
        a proxy that a managed Redis moves to its new primary)."""
        self.target_port = port

    def cut(self) -> None:
        """From now on drop every byte either way; keep every connection open."""
        self._cut = True

    def close(self) -> None:
        """Close every connection (as a network that is back would reset them) and stop."""

        def stop() -> None:
            for w in self._writers:
                w.transport.abort()
            self._loop.stop()

        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(stop)
            self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, self.host, 0))
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        self._loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self._loop)
        for t in tasks:
            t.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            target_r, target_w = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, target_w}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(65536):
                if not self._cut:
                    w.write(data)
                    await w.drain()
            if not self._cut:
                w.transport.abort()  # pass a close on, unless the link is cut

        # Cancelled when the link closes: end quietly (asyncio's server logs a cancelled handler).
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.gather(pipe(client_r, target_w), pipe(target_r, client_w))
