"""Progress display for the command line: a redrawn bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

PLAIN_EVERY_S = 10.0  # outside a terminal (a CI log), at most one line this often


class ProgressDisplay:
    """Call with ``(stage, done, total)``, as often as wanted; ``close()`` ends the display.

    On a terminal the bar is redrawn in place. Elsewhere a line is written when the progress
    has changed and ``PLAIN_EVERY_S`` have passed since the last one, and ``close()`` writes the
    last state if it was not written: a CI log gets a few lines, not one per poll.
    """

    def __init__(
        self, stream: TextIO = sys.stderr, width: int = 30, every_s: float = PLAIN_EVERY_S
    ) -> None:
        self.stream = stream
        self.width = width
        self.every_s = every_s
        self.interactive = stream.isatty()
        self.started = time.monotonic()
        self._last_line = ""
        self._written: tuple[str, int, int] | None = None  # the last state written, plain
        self._written_at = -float("inf")
        self._pending: tuple[str, int, int] | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if self.interactive:
            share = done / total if total else 1.0
            filled = round(share * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            line = f"\r{stage:<11} [{bar}] {done}/{total}  {now - self.started:6.1f}s"
            self.stream.write(line)
            self.stream.flush()
            self._last_line = line
            return
        state = (stage, done, total)
        if state == self._written:
            return
        if now - self._written_at < self.every_s:
            self._pending = state
            return
        self._write(state, now)

    def _write(self, state: tuple[str, int, int], now: float) -> None:
        stage, done, total = state
        self.stream.write(f"{stage}: {done}/{total} ({now - self.started:.1f}s)\n")
        self.stream.flush()
        self._written, self._written_at, self._pending = state, now, None

    def close(self) -> None:
        if self.interactive:
            if self._last_line:
                self.stream.write("\n")
                self.stream.flush()
        elif self._pending is not None and self._pending != self._written:
            self._write(self._pending, time.monotonic())
