"""Serve an ASGI app (``producer.api.create_app(...)``) with a real uvicorn on a free loopback port.

The server runs in a background thread with its own event loop, so tests and the demo can start
several differently configured APIs cheaply. uvicorn's asyncio/uvloop transports set TCP_NODELAY
on accepted connections, so loopback latencies carry no Nagle delay.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from devkit.redis_server import free_port


class ServedApp:
    def __init__(self, app: Any, *, port: int | None = None, log_level: str = "warning", root_path: str = "") -> None:
        """``root_path``: as ``uvicorn --root-path`` (behind a proxy that strips that prefix)."""
        self.port = port or free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level=log_level,
            lifespan="on",
            root_path=root_path,
            # Open SSE streams must not hold shutdown forever.
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name=f"uvicorn:{self.port}", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> ServedApp:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ServedApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
