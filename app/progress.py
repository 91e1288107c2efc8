"""Progress display for the command line: a redrawn bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressDisplay:
    """Call with ``(stage, done, total)``; ``close()`` ends the line."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.interactive = stream.isatty()
        self.started = time.monotonic()
        self._last_stage: str | None = None
        self._last_line = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.started
        share = done / total if total else 1.0
        if self.interactive:
            filled = round(share * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            line = f"\r{stage:<11} [{bar}] {done}/{total}  {elapsed:6.1f}s"
            self.stream.write(line)
            self.stream.flush()
            self._last_line = line
        else:
            # One line per step is readable in CI logs and small: there are at most a few dozen.
            if stage != self._last_stage or done != 0:
                self.stream.write(f"{stage}: {done}/{total} ({elapsed:.1f}s)\n")
                self.stream.flush()
        self._last_stage = stage

    def close(self) -> None:
        if self.interactive and self._last_line:
            self.stream.write("\n")
            self.stream.flush()
