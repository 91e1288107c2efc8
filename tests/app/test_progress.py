"""Progress outside a terminal: a line when it changes, at most so often, and the last state."""

from __future__ import annotations

import io

import pytest

from app.progress import ProgressDisplay


def test_plain_progress_writes_changes_at_most_every_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    monkeypatch.setattr("app.progress.time.monotonic", lambda: now[0])
    stream = io.StringIO()
    display = ProgressDisplay(stream, every_s=10)
    # A poll every second: the same state 30 times, then a step every 3 s.
    for _ in range(30):
        display("clustering", 0, 4)
        now[0] += 1
    for done in range(1, 5):
        display("clustering", done, 4)
        now[0] += 3
    display("voting", 1, 1)  # 12 s after the last line
    now[0] += 1
    display("refinement", 1, 4)  # too soon: kept for close()
    display.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "clustering: 0/4",
        "clustering: 1/4",
        "voting: 1/1",
        "refinement: 1/4",
    ]
