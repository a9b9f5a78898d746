"""A reverse proxy that strips a path prefix, as a gateway in front of the API does: a client's
``GET /chat/v1/turns/x`` reaches the upstream as ``GET /v1/turns/x`` (with ``X-Forwarded-Prefix:
/chat``); a path outside the prefix gets 404 from the proxy itself.

A real HTTP server on loopback, for the auth tests of that deployment shape
(tests/http/test_auth_shapes.py) and to try it by hand::

    python -m devkit.strip_proxy --prefix /chat --upstream 8000 --port 8080

One request per connection: the proxy rewrites the request head, asks the upstream to close after
its answer (``Connection: close``), then copies bytes both ways untouched, so bodies of any
framing and SSE streams pass through as they come.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading

from devkit.thread_server import ThreadServer

MAX_HEAD = 64 * 1024
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade"}


class StripProxy:
    def __init__(self, prefix: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"prefix must start with '/' and not end with one, got {prefix!r}")
        self.prefix = prefix.encode("ascii")
        self.upstream_port = upstream_port
        self.host = host
        self._server = ThreadServer(self._serve, f"strip-proxy-{upstream_port}", host, port, limit=MAX_HEAD)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        """The URL clients use, prefix included."""
        return f"http://{self.host}:{self.port}{self.prefix.decode()}"

    def start(self) -> StripProxy:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> StripProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def strip(self, target: bytes) -> bytes | None:
        """The upstream's request target for the client's ``target``; None outside the prefix."""
        if target == self.prefix or target.startswith(self.prefix + b"?"):
            return b"/" + target[len(self.prefix) :]
        if target.startswith(self.prefix + b"/"):
            return target[len(self.prefix) :]
        return None

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        # A broken or oversized head (the reader's limit) or a vanished peer ends the connection.
        errors = (OSError, ValueError, asyncio.CancelledError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)
        with contextlib.suppress(*errors):
            try:
                await self._exchange(client_r, client_w)
            finally:
                client_w.close()

    async def _exchange(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        head = await client_r.readuntil(b"\r\n\r\n")
        request_line, *headers = head[:-4].split(b"\r\n")
        method, target, version = request_line.split(b" ", 2)
        upstream_target = self.strip(target)
        if upstream_target is None:
            client_w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await client_w.drain()
            return
        kept = [h for h in headers if h.split(b":", 1)[0].strip().lower() not in _HOP_BY_HOP]
        peer = client_w.get_extra_info("peername")
        added = [b"Connection: close", b"X-Forwarded-Prefix: " + self.prefix]
        if peer:
            added.append(f"X-Forwarded-For: {peer[0]}".encode())
        new_head = b"\r\n".join([b" ".join((method, upstream_target, version)), *kept, *added]) + b"\r\n\r\n"
        up_r, up_w = await asyncio.open_connection(self.host, self.upstream_port)
        up_w.write(new_head)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()

        both = {asyncio.ensure_future(pipe(up_r, client_w)), asyncio.ensure_future(pipe(client_r, up_w))}
        try:
            # The upstream closes after its answer, or the client goes away: either ends the exchange.
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in both:
                task.cancel()
            up_w.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m devkit.strip_proxy", description=__doc__.split("\n\n")[0])
    p.add_argument("--prefix", default="/chat")
    p.add_argument("--upstream", type=int, required=True, help="the upstream's port on 127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args(argv)
    proxy = StripProxy(args.prefix, args.upstream, port=args.port).start()
    print(f"{proxy.base_url}/... -> http://127.0.0.1:{args.upstream}/...", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    proxy.stop()


if __name__ == "__main__":
    main()
