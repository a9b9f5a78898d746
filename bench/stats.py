"""Small statistics helpers: percentiles, medians over repeats, rates from timelines."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    """Median that ignores NaN (a repeat that could not measure a figure)."""
    vals = sorted(v for v in values if not math.isnan(v))
    if not vals:
        return math.nan
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def rate(count: int, spans: Iterable[tuple[float, float]]) -> float:
    """Items per second over the window from the first start to the last finish (seconds)."""
    starts, finishes = zip(*spans, strict=True)
    wall = max(finishes) - min(starts)
    return count / wall if wall > 0 else math.nan
