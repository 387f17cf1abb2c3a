"""A small progress bar on stderr: count, rate, ETA. Drawn only on a terminal.

Hand-written (about sixty lines) rather than tqdm: one dependency fewer, and it redraws at most
ten times a second, so it costs nothing measurable at thousands of messages per second.
"""

from __future__ import annotations

import shutil
import sys
import time
from types import TracebackType
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    def __init__(
        self,
        total: int | None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        unit: str = "msg",
        min_interval: float = 0.1,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = _is_tty(self.stream)
        self.enabled = enabled
        self.total = total if total and total > 0 else None
        self.unit = unit
        self.count = 0
        self.min_interval = min_interval
        self.started = time.perf_counter()
        # The rate is measured from the first result on: start-up (imports, building the
        # engine, starting workers) would otherwise make every early ETA far too long.
        self.first: tuple[float, int] | None = None
        self._last_draw = 0.0
        self._drawn = False

    def update(self, n: int = 1) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = (now, self.count)
        self.count += n
        if not self.enabled:
            return
        if now - self._last_draw >= self.min_interval:
            self._last_draw = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The bar as text (without carriage return), fitted to the terminal width."""
        now = time.perf_counter() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        rate = self.rate(now)
        width = shutil.get_terminal_size((80, 24)).columns - 1
        total = self.total if self.total and self.count <= self.total else None
        if total is None:
            return (
                f"{self.count} {self.unit}  {rate:.0f} {self.unit}/s  {format_duration(elapsed)}"[
                    :width
                ]
            )
        frac = self.count / total
        eta = format_duration((total - self.count) / rate) if rate > 0 else "?"
        left = f"{self.count}/{total} {100 * frac:3.0f}% "
        right = f" {rate:.0f} {self.unit}/s ETA {eta}"
        bar_width = max(0, min(40, width - len(left) - len(right) - 2))
        filled = int(bar_width * frac)
        return f"{left}[{'#' * filled}{'.' * (bar_width - filled)}]{right}"[:width]

    def rate(self, now: float | None = None) -> float:
        """Items per second since the first update (0 until there is a measurable interval)."""
        if self.first is None:
            return 0.0
        now = time.perf_counter() if now is None else now
        since, base = self.first
        return (self.count - base) / (now - since) if now - since > 1e-6 else 0.0

    def _draw(self, now: float) -> None:
        self.stream.write("\r" + self.line(now) + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Leave the final count on its own line (nothing at all if never drawn)."""
        if self.enabled and self._drawn:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
