"""Progress of a long job: a bar redrawn in place on a terminal, a plain line every N steps in a log.

Both show throughput and the ETA of the whole job (not just the current epoch), measured since this
process started, so a resumed job's ETA is not skewed by steps it did not run.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 24
REDRAW_SECONDS = 0.5


def duration(seconds: float) -> str:
    """``3h02m``, ``4m05s`` or ``12s``."""
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Counts steps ``done..total``; ``items_per_step`` (e.g. the global batch) gives items/s."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        done: int = 0,
        items_per_step: int = 1,
        unit: str = "it",
        every: int = 0,
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        self.label, self.total, self.done, self.unit = label, total, done, unit
        self.items_per_step, self.every = items_per_step, every
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interactive = enabled and self.stream.isatty()
        self._first, self._began, self._drawn = done, time.monotonic(), 0.0

    def rate(self) -> float:
        """Items per second since this process started counting."""
        elapsed = time.monotonic() - self._began
        return (self.done - self._first) * self.items_per_step / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float:
        rate = self.rate()
        return (self.total - self.done) * self.items_per_step / rate if rate > 0 else float("inf")

    def line(self, **fields: float | str) -> str:
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        eta = self.eta()
        eta_text = duration(eta) if eta != float("inf") else "?"
        return (
            f"[{self.label}] {self.done}/{self.total} {shown} {self.rate():.1f} {self.unit}/s ETA {eta_text}"
        ).replace("  ", " ")

    def update(self, steps: int = 1, **fields: float | str) -> None:
        self.done += steps
        if not self.enabled:
            return
        if self.interactive:
            now = time.monotonic()
            if now - self._drawn >= REDRAW_SECONDS or self.done >= self.total:
                filled = int(BAR_WIDTH * self.done / max(self.total, 1))
                bar = "#" * filled + "." * (BAR_WIDTH - filled)
                self.stream.write(f"\r|{bar}| {self.line(**fields)}\033[K")
                self.stream.flush()
                self._drawn = now
            if self.done >= self.total:
                self.stream.write("\n")
        elif self.every and (self.done % self.every == 0 or self.done >= self.total):
            print(self.line(**fields), file=self.stream, flush=True)
