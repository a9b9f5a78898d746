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

from devkit.thread_server import ThreadServer


class Link:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server = ThreadServer(self._serve, f"link-{target_port}", host)

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> Link:
        self._server.start()
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

        def abort_all() -> None:
            for w in self._writers:
                w.transport.abort()

        self._server.stop(before=abort_all)

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
