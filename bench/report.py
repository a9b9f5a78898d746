"""The result table: per-repeat samples, their medians, and targets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from bench.stats import median

Sample = dict[str, float]  # one repeat of one scenario: figure name -> value


def medians(samples: list[Sample]) -> Sample:
    names = dict.fromkeys(n for s in samples for n in s)
    return {n: median(s.get(n, math.nan) for s in samples) for n in names}


@dataclass(frozen=True)
class Target:
    op: Literal["<=", ">="]
    limit: float
    text: str  # as the issue states it

    def met(self, value: float) -> bool | None:
        if math.isnan(value):
            return None
        return value <= self.limit if self.op == "<=" else value >= self.limit


@dataclass(frozen=True)
class Row:
    id: str
    what: str
    chatlane: str
    reference: str = ""
    ratio: str = ""
    target: Target | None = None
    value: float = math.nan  # the figure the target applies to

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "report"
        met = self.target.met(self.value)
        return "n/a" if met is None else ("met" if met else "MISSED")


HEADER = ("id", "scenario", "chatlane", "reference (same run, same Redis)", "ratio", "target", "result")


def render(rows: list[Row], title: str) -> str:
    """A markdown table."""
    cells = [HEADER] + [
        (r.id, r.what, r.chatlane, r.reference, r.ratio, r.target.text if r.target else "", r.verdict) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = [title, ""]
    for n, c in enumerate(cells):
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def fmt(value: float, unit: str = "", digits: int = 0) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def times(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}×"


def plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"
