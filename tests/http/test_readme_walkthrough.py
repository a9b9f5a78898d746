"""The README's curl walk-through works: its ``sh`` blocks run against a live server.

With curl on PATH the blocks run in bash as written. The same commands also run through a small
interpreter that turns each ``curl`` line into the equivalent httpx request, so the check holds
on machines without curl; it understands exactly the forms the walk-through uses.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.http.conftest import API_KEY, Api

README = Path(__file__).resolve().parents[2] / "README.md"
_SECTION = re.compile(r"<!-- http-walkthrough:begin -->(.*?)<!-- http-walkthrough:end -->", re.S)
_SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
_DEFAULT = re.compile(r"^(\w+)=\$\{(\w+):-([^}]*)\}$")
_CAPTURE = re.compile(r"^(\w+)=\$\((.*)\)$", re.S)
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def walkthrough_commands() -> list[str]:
    section = _SECTION.search(README.read_text())
    assert section, "README.md lacks the http-walkthrough markers"
    script = "\n".join(_SH_BLOCK.findall(section.group(1)))
    lines = script.replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def check_output(out: str) -> None:
    assert re.search(r"^HTTP/1\.1 20[02] ", out, re.M), out  # 200 when run twice: same key, same turn
    assert re.search(r"^location: /v1/turns/[0-9a-f]{32}\r?$", out, re.M | re.I), out
    assert "event: chunk" in out and "event: end" in out
    assert '"state":"completed"' in out
    assert '"role":"assistant"' in out
    assert '"status":"ready"' in out


def test_commands_are_the_expected_shape() -> None:
    commands = walkthrough_commands()
    assert sum(c.startswith("curl ") for c in commands) >= 4
    assert any(_CAPTURE.match(c) for c in commands)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_walkthrough_with_curl(live: Api) -> None:
    script = "set -euo pipefail\n" + "\n".join(walkthrough_commands())
    env = {**os.environ, "BASE": live.url, "KEY": API_KEY}
    res = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    check_output(res.stdout)


def test_walkthrough_with_httpx(live: Api) -> None:
    env = {"BASE": live.url, "KEY": API_KEY}
    out: list[str] = []
    with httpx.Client(timeout=30) as http:
        for command in walkthrough_commands():
            if m := _DEFAULT.match(command):
                env.setdefault(m.group(1), m.group(3))
            elif m := _CAPTURE.match(command):
                curl, _, pipe = m.group(2).partition("|")
                body = run_curl(http, curl, env)
                code = shlex.split(pipe)
                assert code[:2] == ["python3", "-c"], pipe
                res = subprocess.run([sys.executable, "-c", code[2]], input=body, capture_output=True, text=True)
                assert res.returncode == 0, res.stderr
                env[m.group(1)] = res.stdout.strip()
            else:
                out.append(run_curl(http, command, env))
    check_output("\n".join(out))


def run_curl(http: httpx.Client, command: str, env: dict[str, str]) -> str:
    """Run one curl command line with httpx; returns what curl would print."""
    args = [_VAR.sub(lambda m: env[m.group(1) or m.group(2)], a) for a in shlex.split(command)]
    assert args[0] == "curl", command
    method, headers, data, url, include, fail = "GET", {}, None, None, False, False
    it = iter(args[1:])
    for a in it:
        if a in ("-X", "--request"):
            method = next(it)
        elif a in ("-H", "--header"):
            name, _, value = next(it).partition(":")
            headers[name.strip()] = value.strip()
        elif a in ("-d", "--data"):
            data = next(it)
            method = "POST" if method == "GET" else method
        elif a == "--fail-with-body":
            fail = True
        elif a == "-i":
            include = True
        elif a.startswith("-") and set(a[1:]) <= set("sSN"):
            pass  # silent / show errors / no buffering: output is the same
        elif not a.startswith("-"):
            url = a
        else:
            raise AssertionError(f"the walk-through uses a curl option this check does not know: {a}")
    assert url, command
    resp = http.request(method, url, headers=headers, content=data)
    assert not fail or resp.status_code < 400, f"{command}\n{resp.status_code} {resp.text}"
    if not include:
        return resp.text
    head = [f"HTTP/1.1 {resp.status_code} {resp.reason_phrase}", *(f"{k}: {v}" for k, v in resp.headers.items())]
    return "\r\n".join(head) + "\r\n\r\n" + resp.text
