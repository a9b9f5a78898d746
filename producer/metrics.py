"""The API process's /metrics: the fleet as Redis sees it, read at each scrape.

Every API process answers the same numbers (they come from Redis, not from the process), so
Prometheus can scrape any one of them, and ``uvicorn --workers N`` needs no multiprocess mode.
Per-turn timings and counts are the workers' own metrics (worker/metrics.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chatlane.fleet import FleetStatus

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class _Fleet(Collector):
    def __init__(self, status: FleetStatus) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        s = self.status
        yield GaugeMetricFamily("chatlane_workers_alive", "Workers with a heartbeat in the last 10 s", s.workers_alive)
        yield GaugeMetricFamily("chatlane_queue_depth", "Jobs in arq's queue", s.queue_depth)
        yield GaugeMetricFamily("chatlane_sessions_pending", "Sessions that may have waiting turns", s.sessions_pending)
        for name, value in s.counters.items():
            # The fleet's `stats` hash, written by the Lua scripts (stale_commits_rejected, ...).
            if _NAME.match(name):
                yield CounterMetricFamily(f"chatlane_{name}", f"Fleet counter {name} (Redis `stats` hash)", value)


def render(status: FleetStatus) -> tuple[bytes, str]:
    """The exposition text of ``status``, and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fleet(status))
    return generate_latest(registry), CONTENT_TYPE_LATEST
