"""A progress line with ETA for long loops in every job: one line every ``every_s`` seconds.

A fine-tune that prints once per epoch is silent for minutes; a bar redrawn in place is unreadable
in a SLURM log. This prints ``[tag] 1234/50000 iterations (2.5%), 3.1 it/s, eta 4:22:10`` at most
every ``every_s`` seconds (and at the end), so a log shows that a job is alive and when it ends.
The clock is injectable (tests do not wait).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def eta_text(seconds: float) -> str:
    """``4:22:10``; days as ``2d 4:22:10``."""
    s = max(0, int(round(seconds)))
    days, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{days}d " if days else "") + f"{h}:{m:02d}:{s:02d}"


class Progress:
    """Counts ``total`` units (iterations, images) and prints progress with an ETA."""

    def __init__(self, tag: str, total: int, unit: str = "iterations", every_s: float = 30.0,
                 enabled: bool = True, clock: Callable[[], float] = time.monotonic,
                 out: Callable[[str], None] | None = None) -> None:
        self.tag, self.total, self.unit, self.every_s, self.enabled = tag, max(int(total), 0), unit, every_s, enabled
        self.clock, self.out = clock, out or (lambda line: print(line, flush=True))
        self.done, self.t0 = 0, clock()
        self._last = self.t0

    def line(self) -> str:
        elapsed = max(self.clock() - self.t0, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = eta_text(left) if rate > 0 else "unknown"
        return (f"[{self.tag}] {self.done}/{self.total} {self.unit} ({pct:.1f}%), {rate:.2f}/s, "
                f"elapsed {eta_text(elapsed)}, eta {eta}")

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if self.enabled and (now - self._last >= self.every_s or self.done >= self.total):
            self._last = now
            self.out(self.line())
