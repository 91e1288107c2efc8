"""The report's per-class table: which pointer stands out."""

from __future__ import annotations

import numpy as np

from app.report import class_namer, class_rows, histogram_bars, vote_counts


def classes(*flagged: tuple[int, int, int]) -> list[dict[str, int]]:
    return [
        {"label": label, "n_samples": 100, "n_flagged": n, "flagged_voted_label": voted}
        for label, n, voted in flagged
    ]


def test_the_strongest_pointer_stands_out() -> None:
    votes = {(0, 1): 17, (1, 0): 3, (2, 3): 30, (3, 2): 4}
    rows = class_rows(
        classes((0, 36, 1), (1, 5, 0), (2, 40, 3), (3, 6, 2)),
        class_namer(["shirt", "dress", "sneaker", "trouser"]),
        votes,
    )
    assert [r.pointer for r in rows] == [
        "dress → shirt", "shirt → dress", "trouser → sneaker", "sneaker → trouser",
    ]  # fmt: skip
    assert [r.pointer_count for r in rows] == [17, 3, 30, 4]
    assert [r.standout for r in rows] == [False, False, True, False]


def test_a_few_scattered_flags_point_nowhere_in_particular() -> None:
    rows = class_rows(classes((0, 3, 1), (1, 2, 0)), class_namer(None), {(0, 1): 2, (1, 0): 1})
    assert not any(r.standout for r in rows)
    assert rows[0].pointer == "1 → 0"


def test_vote_counts_and_histogram() -> None:
    labels = np.array([7, 7, 7, 0])
    voted = np.array([1, 1, 2, 6])
    assert vote_counts(labels, voted) == {(0, 6): 1, (7, 1): 2, (7, 2): 1}
    bars = histogram_bars([0.0, 0.5, 1.0], [100, 4])
    assert [b.flagged for b in bars] == [False, True]
    assert bars[0].height > bars[1].height > 0
