"""What a report pictures, chosen from the per-sample results: the most suspicious samples, and
for contrast the least suspicious ones of the same classes; and the score histogram."""

from __future__ import annotations

from typing import Any

import numpy as np

N_SUSPICIOUS = 24
CLEAN_PER_CLASS = 4
HISTOGRAM_BINS = 20


def pick_examples(
    labels: np.ndarray,
    scores: np.ndarray,
    is_flagged: np.ndarray,
    voted_label: np.ndarray,
    suspicion_order: np.ndarray,
) -> dict[str, list[dict[str, Any]]]:
    """``{"suspicious": [...], "clean": [...]}``, each sample as index, label, voted label and
    score, in the labels' own values."""
    suspicious = [int(i) for i in suspicion_order[:N_SUSPICIOUS] if is_flagged[i]]
    clean: list[int] = []
    for label in dict.fromkeys(int(labels[i]) for i in suspicious):  # most suspicious first
        members = np.flatnonzero((labels == label) & ~is_flagged)
        calmest = members[np.argsort(scores[members], kind="stable")][:CLEAN_PER_CLASS]
        clean += [int(i) for i in calmest]

    def sample(index: int) -> dict[str, Any]:
        voted = int(voted_label[index])
        return {
            "index": index,
            "label": int(labels[index]),
            "voted_label": voted if voted >= 0 else None,
            "score": round(float(scores[index]), 4),
        }

    return {"suspicious": [sample(i) for i in suspicious], "clean": [sample(i) for i in clean]}


def score_histogram(scores: np.ndarray) -> dict[str, list[Any]]:
    counts, edges = np.histogram(scores, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return {"edges": edges.round(4).tolist(), "counts": counts.tolist()}
