from __future__ import annotations

import numpy as np
import pytest

from incompat.research.metrics import attack_success, detection_metrics


def test_detection_metrics_count_against_the_truth() -> None:
    is_poison = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    is_flagged = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], bool)
    m = detection_metrics(is_flagged, is_poison)
    assert m.n_poisons == 4
    assert m.n_flagged == 4
    assert m.true_positives == 3
    assert m.recall == pytest.approx(0.75)
    assert m.precision == pytest.approx(0.75)
    assert m.clean_flag_rate == pytest.approx(1 / 6)


def test_detection_metrics_without_poisons_or_flags() -> None:
    m = detection_metrics(np.zeros(5, bool), np.zeros(5, bool))
    assert (m.recall, m.precision, m.clean_flag_rate) == (1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        detection_metrics(np.zeros(5, bool), np.zeros(4, bool))


def test_attack_success_needs_correct_clean_and_target_triggered() -> None:
    clean = np.array([3, 3, 3, 1])  # the last one is misclassified when clean
    triggered = np.array([5, 3, 5, 5])
    assert attack_success(clean, triggered, source=3, target=5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no source-class"):
        attack_success(np.array([]), np.array([]), source=3, target=5)
