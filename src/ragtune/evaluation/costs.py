"""Cost: measured wall and CPU seconds and peak memory of a piece of work, and its price."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Prices:
    cpu_hour: float = 0.048  # USD per vCPU-hour, about a general-purpose cloud VM (on-demand, 2026)
    gpu_hour: float = 2.50  # USD per GPU-hour, about one data-centre GPU on demand; unused on a CPU run


@dataclass
class Measured:
    wall_s: float = 0.0
    cpu_s: float = 0.0  # user + system CPU seconds of this process (all cores)
    peak_rss_mb: float = 0.0  # the process's peak resident memory so far

    def usd(self, prices: Prices) -> float:
        return self.cpu_s / 3600 * prices.cpu_hour


class Meter:
    """`with Meter() as m: work()` -> m.result holds wall, CPU seconds and peak RSS."""

    def __enter__(self) -> Meter:
        self._t = time.perf_counter()
        self._c = time.process_time()
        self.result = Measured()
        return self

    def __exit__(self, *exc) -> None:
        self.result.wall_s = time.perf_counter() - self._t
        self.result.cpu_s = time.process_time() - self._c
        self.result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def disk_bytes(path: str | Path | None) -> int:
    if not path:
        return 0
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.exists() else 0
