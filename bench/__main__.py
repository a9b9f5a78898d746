"""``python -m bench [--quick] [--repeats N] [--only B1,B4]``: run the scenarios, print one table."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import poll_sweep
from bench.env import Bench
from bench.report import Row, medians, render
from bench.scenarios import SCENARIOS


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run (small sizes, one repeat)")
    p.add_argument("--repeats", type=int, default=None, help="repeats per scenario (default 3, quick 1)")
    p.add_argument("--only", default="", help="comma-separated scenario ids, e.g. B1,B4")
    p.add_argument("--logs", type=Path, default=None, help="directory for worker logs (default: a temp dir)")
    p.add_argument("--poll-sweep", action="store_true", help="measure the poll_delay trade-off instead")
    return p.parse_args(argv)


async def main(argv: list[str]) -> int:
    args = parse(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    only = {s.strip().upper() for s in args.only.split(",") if s.strip()}
    log_dir = args.logs or Path(tempfile.mkdtemp(prefix="chatlane-bench-"))
    chosen = [s for s in SCENARIOS if not only or s.ID in only]
    rows: list[Row] = []
    began = time.monotonic()
    # Other processes on the machine skew absolute figures (ratios less so): say how busy it was.
    load_before = f"{os.getloadavg()[0]:.1f}"
    if args.poll_sweep:
        async with Bench(log_dir, quick=args.quick) as bench:
            print(await poll_sweep.run(bench))
        return 0
    async with Bench(log_dir, quick=args.quick) as bench:
        for scenario in chosen:
            t0 = time.monotonic()
            print(f"{scenario.ID} ...", file=sys.stderr, flush=True)
            samples = await scenario.measure(bench, repeats)
            rows += scenario.rows(medians(samples), args.quick)
            print(f"{scenario.ID} done in {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
    mode = "quick" if args.quick else "full"
    title = (
        f"chatlane benchmarks ({mode}; medians of {repeats} repeat(s); one private redis-server; "
        f"{time.monotonic() - began:.0f}s; {os.cpu_count()} cores, load average {load_before} before, "
        f"{os.getloadavg()[0]:.1f} after; worker logs in {log_dir})"
    )
    print(render(rows, title))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(main(sys.argv[1:])))
