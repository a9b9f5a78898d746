"""CPU share of a process, read from /proc (user + system time over wall time)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name may contain spaces; fields after it are fixed. utime, stime are fields
    # 14 and 15 of proc(5), i.e. 11 and 12 after the state field.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class CpuMeter:
    """``m = CpuMeter(pid)`` ... ``m.share()``: cores used since creation (1.0 = one full core)."""

    pid: int
    cpu0: float = field(init=False)
    wall0: float = field(init=False)

    def __post_init__(self) -> None:
        self.cpu0, self.wall0 = cpu_seconds(self.pid), time.monotonic()

    def seconds(self) -> float:
        return cpu_seconds(self.pid) - self.cpu0

    def share(self) -> float:
        return self.seconds() / (time.monotonic() - self.wall0)
