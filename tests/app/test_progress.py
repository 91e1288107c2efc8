"""Progress outside a terminal: a line when it changes, at most so often, and the last state;
on a terminal, a bar drawn by rich."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from app.cli.progress import ProgressDisplay


def test_plain_progress_writes_changes_at_most_every_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    monkeypatch.setattr("app.cli.progress.time.monotonic", lambda: now[0])
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


def test_terminal_progress_is_a_rich_bar() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=80)
    display = ProgressDisplay(io.StringIO(), console=console)
    assert display.interactive
    display("voting", 0, 0)  # a stage with nothing to count yet
    display("clustering", 1, 4)
    display("clustering", 3, 4)
    display.close()  # draws the last state, and leaves it on the screen
    drawn = screen.getvalue()
    assert "\x1b[" in drawn, "drawn with terminal control codes"
    frames = [line for line in drawn.splitlines() if "━" in line]  # rich's bar
    assert frames
    assert "clustering" in frames[-1]
    assert "3/4" in frames[-1]


def test_no_bar_and_nothing_written_when_nothing_happened() -> None:
    screen = io.StringIO()
    ProgressDisplay(io.StringIO(), console=Console(file=screen, force_terminal=True)).close()
    plain = io.StringIO()
    ProgressDisplay(plain).close()
    assert (screen.getvalue(), plain.getvalue()) == ("", "")


def test_an_interrupted_bar_gives_the_terminal_its_cursor_back() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True)

    def interrupted() -> None:
        with ProgressDisplay(console=console) as display:
            display("clustering", 1, 4)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert screen.getvalue().endswith("\x1b[?25h"), "the cursor shown again"
