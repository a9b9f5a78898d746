"""Start and signal real worker processes (``python -m worker``, or plain arq for other settings)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def worker_env(redis_url: str, prefix: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLANE_")}
    env.update({"CHATLANE_REDIS_URL": redis_url, "CHATLANE_KEY_PREFIX": prefix, "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


CHATLANE_APP = "worker.WorkerSettings"


class WorkerProcess:
    """One worker process; its log goes to ``log_path``.

    ``app`` is the arq settings class to run: chatlane's by default, the benchmarks' baselines otherwise.
    """

    def __init__(
        self, env: Mapping[str, str], log_path: Path, cwd: Path | None = None, app: str = CHATLANE_APP
    ) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd or Path(__file__).resolve().parent.parent
        self.app = app
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        # chatlane's own entry point runs arq's worker so that it survives Redis outages.
        cmd = ["-m", "worker"] if self.app == CHATLANE_APP else ["-m", "arq", self.app]
        self.proc = subprocess.Popen(
            [sys.executable, *cmd],
            env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        if self.wait(timeout) is None:
            self.signal(signal.SIGKILL)
            self.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
