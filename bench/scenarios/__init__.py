"""One module per scenario of issue #5, each a ``Scenario``."""

from __future__ import annotations

from typing import Protocol

from bench.env import Bench
from bench.report import Row, Sample
from bench.scenarios import (
    b1_throughput,
    b2_parallel,
    b3_handoff,
    b4_idle_latency,
    b5_history,
    b6_memory,
    b7_cpu,
    b8_naive,
    b9_openai_cpu,
    b10_stop,
    b11_streams,
    b12_budget,
    b13_ops_cost,
)


class Scenario(Protocol):
    ID: str

    async def measure(self, bench: Bench, repeats: int) -> list[Sample]:
        """Start the scenario's workers and run every repeat: one sample each."""

    def rows(self, m: Sample, quick: bool) -> list[Row]:
        """The table rows for the medians ``m``."""


SCENARIOS: list[Scenario] = [
    b1_throughput,
    b2_parallel,
    b3_handoff,
    b4_idle_latency,
    b5_history,
    b6_memory,
    b7_cpu,
    b8_naive,
    b9_openai_cpu,
    b10_stop,
    b11_streams,
    b12_budget,
    b13_ops_cost,
]
