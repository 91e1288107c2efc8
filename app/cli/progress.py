"""Progress display for the command line: a ``rich`` bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

PLAIN_EVERY_S = 10.0  # outside a terminal (a CI log), at most one line this often


class ProgressDisplay:
    """Call with ``(stage, done, total)``, as often as wanted; ``close()``, or leaving it as a
    context manager, ends the display.

    On a terminal (``stream`` is one, or ``console`` is given) a ``rich`` bar is redrawn in
    place. Elsewhere a line is written when the progress has changed and ``PLAIN_EVERY_S`` have
    passed since the last one, and ``close()`` writes the last state if it was not written: a CI
    log gets a few lines, not one per poll.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        every_s: float = PLAIN_EVERY_S,
        *,
        console: Console | None = None,
    ) -> None:
        # Looked up now, not at import: a redirected sys.stderr is the one written to.
        self.stream = sys.stderr if stream is None else stream
        self.every_s = every_s
        self.console = console
        self.interactive = console is not None or self.stream.isatty()
        self.started = time.monotonic()
        self._bar: tuple[Progress, TaskID] | None = None  # made on the first call
        self._written: tuple[str, int, int] | None = None  # the last state written, plain
        self._written_at = -float("inf")
        self._pending: tuple[str, int, int] | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.interactive:
            self._draw(stage, done, total)
            return
        now = time.monotonic()
        state = (stage, done, total)
        if state == self._written:
            return
        if now - self._written_at < self.every_s:
            self._pending = state
            return
        self._write(state, now)

    def _draw(self, stage: str, done: int, total: int) -> None:
        if self._bar is None:
            progress = self._start()
            self._bar = progress, progress.add_task(stage, completed=done, total=total)
        else:
            progress, task = self._bar
            progress.update(task, description=stage, completed=done, total=total)

    def _start(self) -> Progress:
        # Imported only when a bar is drawn: a CI log needs none of rich.
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        progress = Progress(
            TextColumn("{task.description:<11}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console or Console(file=self.stream),
            # Other output keeps its stream: stdout is for results, not the bar's console.
            redirect_stdout=False,
            redirect_stderr=False,
        )
        progress.start()
        return progress

    def _write(self, state: tuple[str, int, int], now: float) -> None:
        stage, done, total = state
        self.stream.write(f"{stage}: {done}/{total} ({now - self.started:.1f}s)\n")
        self.stream.flush()
        self._written, self._written_at, self._pending = state, now, None

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Also on Ctrl-C: a bar left running would leave the terminal's cursor hidden.
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar[0].stop()
            self._bar = None
        elif self._pending is not None and self._pending != self._written:
            self._write(self._pending, time.monotonic())
