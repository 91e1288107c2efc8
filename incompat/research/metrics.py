"""Detection metrics against ground truth, and the paper's attack-success measure."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class DetectionMetrics:
    n_poisons: int
    n_flagged: int
    true_positives: int
    recall: float  # share of poisons flagged
    precision: float  # share of flagged samples that are poisons
    clean_flag_rate: float  # share of clean samples flagged

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def detection_metrics(is_flagged: np.ndarray, is_poison: np.ndarray) -> DetectionMetrics:
    is_flagged = np.asarray(is_flagged, bool)
    is_poison = np.asarray(is_poison, bool)
    if is_flagged.shape != is_poison.shape:
        raise ValueError("is_flagged and is_poison must have the same shape")
    hits = int((is_flagged & is_poison).sum())
    n_poisons = int(is_poison.sum())
    n_flagged = int(is_flagged.sum())
    n_clean = is_poison.size - n_poisons
    return DetectionMetrics(
        n_poisons=n_poisons,
        n_flagged=n_flagged,
        true_positives=hits,
        recall=hits / n_poisons if n_poisons else 1.0,
        precision=hits / n_flagged if n_flagged else 1.0,
        clean_flag_rate=(n_flagged - hits) / n_clean if n_clean else 0.0,
    )


def attack_success(
    clean_predictions: np.ndarray,
    triggered_predictions: np.ndarray,
    source: int | np.ndarray,
    target: int,
) -> float:
    """Share of source-class test images classified correctly when clean and as the target when
    triggered (ENGINE_SPEC). Both arrays hold predictions for the same source-class test images;
    ``source`` is their class, or each image's class when the attack has several sources."""
    clean_predictions = np.asarray(clean_predictions)
    triggered_predictions = np.asarray(triggered_predictions)
    if clean_predictions.shape != triggered_predictions.shape:
        raise ValueError("clean and triggered predictions must have the same shape")
    if clean_predictions.size == 0:
        raise ValueError("no source-class test images")
    success = (clean_predictions == source) & (triggered_predictions == target)
    return float(success.mean())
