"""``uvicorn producer.api:app`` in a process of its own, as the Procfile runs it (benchmarks, tests)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from devkit.redis_server import free_port


class UvicornProcess:
    def __init__(self, env: dict[str, str], log: Path, extra_args: Sequence[str] = ()) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "uvicorn", "producer.api:app", "--host", "127.0.0.1", "--port", str(self.port),
               "--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "2",
               *extra_args]  # fmt: skip
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    def _up(self, deadline: float) -> bool:
        if self.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not come up (exit code {self.proc.poll()})")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self._up(deadline):
            time.sleep(0.05)

    async def ready(self, timeout: float = 30) -> None:
        """wait_ready without blocking the caller's event loop."""
        await asyncio.to_thread(self.wait_ready, timeout)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
