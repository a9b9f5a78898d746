"""The benchmark harness still runs: ``python -m bench --quick`` prints a complete table.

No timing is asserted here (timings belong to ``make bench`` on a quiet machine); only that every
scenario ran and every row has its figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IDS = ("B1a", "B1b", "B2", "B3", "B4", "B5", "B6", "B7", "B8 (i)", "B8 (ii)", "B9", "B10", "B11", "B12", "B13")


@pytest.mark.timeout(230)
def test_quick_bench_prints_a_complete_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--logs", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=220,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| B")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert {c[0] for c in cells} >= set(IDS), proc.stdout
    for c in cells:
        assert c[2] and "n/a" not in c[2:5], c  # chatlane figure, reference and ratio were measured
        assert c[6] in ("met", "MISSED", "report"), c
