"""``python -m bench.worker_variant``: ``python -m worker``, except that with
``BENCH_WORKER_METRICS=off`` every Prometheus metric of ``worker.metrics`` is a no-op: the
reference B13 measures the metrics' hot-path cost against. Production has no such switch (the
metrics are always recorded; CHATLANE_METRICS_PORT only says whether they are served)."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from chatlane.settings import get_settings
from worker import metrics
from worker.resilient import run_worker

SWITCH = "BENCH_WORKER_METRICS"


class _Nothing:
    def labels(self, *args: Any, **kwargs: Any) -> _Nothing:
        return self

    def inc(self, *args: Any, **kwargs: Any) -> None:
        pass

    def dec(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set(self, *args: Any, **kwargs: Any) -> None:
        pass

    def observe(self, *args: Any, **kwargs: Any) -> None:
        pass


def metrics_off() -> list[str]:
    """Swap every metric object of ``worker.metrics`` for a no-op (its functions read them at call time)."""
    names = [name for name, value in vars(metrics).items() if isinstance(value, MetricWrapperBase)]
    for name in names:
        setattr(metrics, name, _Nothing())
    return names


if __name__ == "__main__":
    if os.environ.get(SWITCH) == "off":
        metrics_off()
    run_worker(get_settings())
