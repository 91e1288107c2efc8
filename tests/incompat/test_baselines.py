from __future__ import annotations

import numpy as np

from incompat.research.baselines import activation_clustering, spectral_signatures


def features_with_a_shifted_group() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three classes of Gaussian features; 30 of class 2's 300 samples shifted along one axis."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(900, 16)).astype(np.float32)
    labels = np.repeat(np.arange(3), 300)
    is_poison = np.zeros(900, bool)
    is_poison[600:630] = True
    features[is_poison, 3] += 8.0
    return features, labels, is_poison


def test_spectral_signatures_remove_the_outliers_along_the_top_direction() -> None:
    features, labels, is_poison = features_with_a_shifted_group()
    flagged = spectral_signatures(features, labels, poison_share=0.1)
    assert flagged[is_poison].all()
    # 1.5 times the share, in every class: 45 of each class's 300.
    assert np.bincount(labels[flagged]).tolist() == [45, 45, 45]


def test_activation_clustering_flags_a_small_separate_cluster_only() -> None:
    features, labels, is_poison = features_with_a_shifted_group()
    flagged = activation_clustering(features, labels, seed=0)
    assert flagged[is_poison].mean() >= 0.95
    assert flagged[labels == 2].sum() <= 40
