"""Start-up of real worker (``python -m worker``) and API (``uvicorn producer.api:app``) processes.

A configuration mistake ends the process with a non-zero status and exactly one line on stderr
that says what is wrong, no traceback, and never the Redis password. A Redis outage is one log
line when it starts and one when it ends, not one per retry.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from chatlane.connection import redacted
from devkit.processes import WorkerProcess
from devkit.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = f"pw-{uuid.uuid4().hex}"
WRONG = f"wrong-{uuid.uuid4().hex}"


class LockedRedis(RedisServer):
    """A redis-server with ``requirepass``; its URL carries the password."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port=port, extra_args=["--requirepass", PASSWORD])

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LockedRedis:
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.3) as s:
                s.sendall(f"AUTH {PASSWORD}\r\n".encode())
                return s.recv(16).startswith(b"+OK")
        except OSError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)


@pytest.fixture(scope="module")
def locked() -> Iterator[LockedRedis]:
    with LockedRedis() as server:
        yield server


def env_of(**settings: str) -> dict[str, str]:
    """This process's environment without chatlane's settings or provider keys, plus ``settings``
    (``redis_url="..."`` becomes CHATLANE_REDIS_URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATLANE_", "OPENAI_"))}
    env.update({f"CHATLANE_{k.upper()}": v for k, v in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def worker_command() -> list[str]:
    return [sys.executable, "-m", "worker"]


def api_command(port: int | None = None) -> list[str]:
    port = port or free_port()
    return [sys.executable, "-m", "uvicorn", "producer.api:app", "--host", "127.0.0.1", "--port", str(port)]


COMMANDS: dict[str, Callable[[], list[str]]] = {"worker": worker_command, "api": api_command}


def run(program: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The timeout catches a process that starts instead of failing; it is not a speed claim.
    return subprocess.run(COMMANDS[program](), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def assert_fails_in_one_line(proc: subprocess.CompletedProcess[str], program: str, *needles: str) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"chatlane {program}: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in output
    assert PASSWORD not in output and WRONG not in output
    return lines[0]


# (case, CHATLANE_* settings given the locked Redis, what the line must say)
CASES: list[tuple[str, Callable[[LockedRedis], dict[str, str]], tuple[str, ...]]] = [
    ("url_without_scheme", lambda r: {"redis_url": f"localhost:{r.port}"}, ("CHATLANE_REDIS_URL", "not a Redis URL")),
    (
        "url_without_scheme_with_password",
        lambda r: {"redis_url": f":{PASSWORD}@127.0.0.1:{r.port}/0"},
        ("not a Redis URL", ":***@"),
    ),
    ("db_not_a_number", lambda r: {"redis_url": f"redis://127.0.0.1:{r.port}/zero"}, ("not a Redis URL",)),
    (
        "db_out_of_range",
        lambda r: {"redis_url": f"redis://:{PASSWORD}@127.0.0.1:{r.port}/99"},
        ("database 99", "out of range"),
    ),
    (
        "wrong_password",
        lambda r: {"redis_url": f"redis://:{WRONG}@127.0.0.1:{r.port}/0"},
        ("refused the credentials", "127.0.0.1:"),
    ),
    (
        "no_password",
        lambda r: {"redis_url": f"redis://127.0.0.1:{r.port}/0"},
        ("refused the credentials", "Authentication required"),
    ),
    ("invalid_setting", lambda r: {"redis_url": r.url, "lease_ttl_ms": "soon"}, ("CHATLANE_LEASE_TTL_MS",)),
]

WORKER_CASES: list[tuple[str, Callable[[LockedRedis], dict[str, str]], tuple[str, ...]]] = [
    (
        "model_without_credentials",
        lambda r: {"redis_url": r.url, "model": "openai:gpt-4o-mini"},
        ("CHATLANE_MODEL=openai:gpt-4o-mini", "OPENAI_API_KEY"),
    ),
    (
        "summary_model_without_credentials",
        lambda r: {
            "redis_url": r.url,
            "handler": "tests.handlers:echo",
            "history_strategy": "summarize",
            "model": "openai:gpt-4o-mini",
        },
        ("CHATLANE_MODEL=openai:gpt-4o-mini", "OPENAI_API_KEY"),
    ),
    ("handler_not_importable", lambda r: {"redis_url": r.url, "handler": "no_such_module:handle"}, ("cannot import",)),
    (
        "handler_attribute_missing",
        lambda r: {"redis_url": r.url, "handler": "tests.handlers:no_such_handler"},
        ("CHATLANE_HANDLER=tests.handlers:no_such_handler", "no attribute"),
    ),
]


@pytest.mark.parametrize("program", ["worker", "api"])
@pytest.mark.parametrize(("case", "settings", "needles"), CASES, ids=[c[0] for c in CASES])
def test_a_configuration_mistake_ends_the_process_in_one_line(
    locked: LockedRedis,
    program: str,
    case: str,
    settings: Callable[[LockedRedis], dict[str, str]],
    needles: tuple[str, ...],
) -> None:
    assert_fails_in_one_line(run(program, env_of(**settings(locked))), program, *needles)


API_CASES: list[tuple[str, Callable[[LockedRedis], dict[str, str]], tuple[str, ...]]] = [
    ("api_key_bad_tenant", lambda r: {"redis_url": r.url, "api_keys": "Not A Tenant=k1"}, ("CHATLANE_API_KEYS",)),
    ("api_keys_file_missing", lambda r: {"redis_url": r.url, "api_keys_file": "/no/keys"}, ("/no/keys",)),
]


@pytest.mark.parametrize(("case", "settings", "needles"), API_CASES, ids=[c[0] for c in API_CASES])
def test_an_api_key_mistake_ends_the_api_in_one_line(
    locked: LockedRedis, case: str, settings: Callable[[LockedRedis], dict[str, str]], needles: tuple[str, ...]
) -> None:
    assert_fails_in_one_line(run("api", env_of(**settings(locked))), "api", *needles)


@pytest.mark.parametrize(("case", "settings", "needles"), WORKER_CASES, ids=[c[0] for c in WORKER_CASES])
def test_a_worker_whose_turns_cannot_run_ends_in_one_line(
    locked: LockedRedis, case: str, settings: Callable[[LockedRedis], dict[str, str]], needles: tuple[str, ...]
) -> None:
    assert_fails_in_one_line(run("worker", env_of(**settings(locked))), "worker", *needles)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{PASSWORD}@h:6379/0", "redis://:***@h:6379/0"),
        (f"redis://user:{PASSWORD}@h", "redis://user:***@h"),
        (f"redis://{PASSWORD}@h/1", "redis://***@h/1"),  # user info alone may be a password
        (f"rediss://u:{PASSWORD}/?@h:1/0", "rediss://u:***@h:1/0"),  # unescaped / ? in the password
        (f"redis://h/0?password={PASSWORD}&db=1", "redis://h/0?password=***&db=1"),
        (f"unix:///tmp/r.sock?password={PASSWORD}", "unix:///tmp/r.sock?password=***"),
        (f":{PASSWORD}@localhost:6379", ":***@localhost:6379"),  # no scheme: still redacted
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ],
)
def test_redacted_hides_the_password_in_every_form_of_url(url: str, shown: str) -> None:
    assert redacted(url) == shown


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def client_names(server: LockedRedis) -> list[str]:
    with server.client() as c:
        return [str(entry.get("name", "")) for entry in c.client_list()]


def test_a_url_with_a_password_is_never_printed_and_connections_are_named(locked: LockedRedis, tmp_path: Path) -> None:
    """Both sides start with the password in the URL; neither prints it. The API starts although
    CHATLANE_MODEL names a provider whose key it lacks: it never calls the model, and does not
    need the provider's key (which a worker holds)."""
    worker = WorkerProcess(env_of(redis_url=locked.url, key_prefix="startup"), tmp_path / "worker.log").start()
    api_log = (tmp_path / "api.log").open("w")
    port = free_port()
    api = subprocess.Popen(
        api_command(port),
        env=env_of(redis_url=locked.url, key_prefix="startup", model="openai:gpt-4o-mini"),
        cwd=ROOT, stdout=api_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: " up (" in worker.log(), "the worker")
        wait_for(lambda: _get(port, "/healthz") == 200, "the API")
        # Reads through the API's pool; ready once the worker's first heartbeat is in.
        wait_for(lambda: _get(port, "/readyz") == 200, "the API to be ready")
        names = client_names(locked)
        assert "chatlane-worker" in names and "chatlane-api" in names, names
    finally:
        worker.stop()
        api.terminate()
        api.wait(10)
        api_log.close()
    for log in (worker.log(), (tmp_path / "api.log").read_text()):
        assert PASSWORD not in log
        assert "Traceback" not in log


def _get(port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def warnings_of(log: str) -> list[str]:
    return [line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line)]


def test_a_worker_logs_one_line_when_redis_goes_away_and_one_when_it_is_back(tmp_path: Path) -> None:
    with LockedRedis() as server:
        worker = WorkerProcess(env_of(redis_url=server.url, key_prefix="outage"), tmp_path / "w.log").start()
        try:
            wait_for(lambda: " up (" in worker.log(), "the worker")
            started = len(worker.log().splitlines())
            server.stop()
            # Several of the worker's loops retry meanwhile: its poll (backoff to 2 s), the sweep
            # (every 1 s), webhooks, the stop-signal subscription, the heartbeat.
            time.sleep(5)
            server.start()
            wait_for(lambda: "is back" in worker.log(), "the recovery line")
            time.sleep(2)  # anything the other loops would say after it
            assert worker.alive()
        finally:
            worker.stop()
        during = "\n".join(worker.log().splitlines()[started:])
    lines = warnings_of(during)
    assert len(lines) == 2, during
    assert "unavailable" in lines[0] and f"127.0.0.1:{server.port}/0" in lines[0]
    assert "is back" in lines[1]
    assert PASSWORD not in worker.log()


def test_a_worker_started_before_redis_waits_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    worker = WorkerProcess(
        env_of(redis_url=f"redis://:{PASSWORD}@127.0.0.1:{port}/0", key_prefix="early"), tmp_path / "w.log"
    ).start()
    try:
        wait_for(lambda: "not answering" in worker.log(), "the waiting line")
        time.sleep(3)  # a line per retry would show here
        with LockedRedis(port=port):
            wait_for(lambda: " up (" in worker.log(), "the worker")
            worker.stop()
    finally:
        worker.stop()
    lines = warnings_of(worker.log())
    assert [("not answering" in line, "answers after" in line) for line in lines[:2]] == [
        (True, False),
        (False, True),
    ], worker.log()
    assert not any("not answering" in line for line in lines[2:]), worker.log()
    assert PASSWORD not in worker.log()
