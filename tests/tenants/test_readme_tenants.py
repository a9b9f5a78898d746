"""The README's "Tenants and quotas" example runs as written, saved as a file, against a worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import Fleet

README = Path(__file__).resolve().parents[2] / "README.md"


def example() -> str:
    section = re.search(r"<!-- tenants:begin -->\n```python\n(.*?)```\n<!-- tenants:end -->", README.read_text(), re.S)
    assert section, "README.md lacks the tenants example"
    return section.group(1)


def test_the_readme_tenants_example_runs_as_written(fleet: Fleet, tmp_path: Path) -> None:
    fleet.start(1)
    (tmp_path / "tenants_example.py").write_text(example())
    env = {
        **os.environ,
        "CHATLANE_REDIS_URL": fleet.redis_url,
        "CHATLANE_KEY_PREFIX": fleet.prefix,
        # One new turn a minute: the example's third enqueue meets the quota.
        "CHATLANE_TENANT_TURNS_PER_MIN": "1",
    }
    out = subprocess.run(
        [sys.executable, "tenants_example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    first, second, third = out.stdout.splitlines()
    assert (first, second) == ("completed", "acme cannot see bravo's turn")
    quota = re.fullmatch(r"tenant_quota retry after (\d+) s", third)
    assert quota and 1 <= int(quota.group(1)) <= 60, third
