"""Two classic defences that, like ours, need no clean data: for the benchmark's comparison.

Both read the penultimate-layer features of a model trained on the whole (poisoned) dataset
(``evaluation.RetrainedModel.features``) and judge each class on its own.

- Spectral signatures (Tran, Li & Madry, NeurIPS 2018): a backdoor leaves a trace along the top
  singular vector of a class's centred features; the samples with the largest squared projection
  are removed, 1.5 times the assumed poison share of every class.
- Activation clustering (Chen et al., 2018): a class's features, reduced to 10 dimensions, are split
  in two by k-means; a cluster holding at most 35 % of the class is taken to be the poisons.
"""

from __future__ import annotations

import numpy as np


def spectral_signatures(
    features: np.ndarray, labels: np.ndarray, *, poison_share: float = 0.05
) -> np.ndarray:
    """Flags (bool N): in every class, the top 1.5 * ``poison_share`` outlier scores."""
    flagged = np.zeros(labels.shape[0], bool)
    for cls in np.unique(labels):
        index = np.flatnonzero(labels == cls)
        centred = features[index] - features[index].mean(0)
        _u, _s, vt = np.linalg.svd(centred, full_matrices=False)
        score = (centred @ vt[0]) ** 2
        remove = min(index.size, round(1.5 * poison_share * index.size))
        if remove:
            flagged[index[np.argsort(score)[-remove:]]] = True
    return flagged


def activation_clustering(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    dims: int = 10,
    max_share: float = 0.35,
    seed: int = 0,
) -> np.ndarray:
    """Flags (bool N): per class, the smaller of two k-means clusters of the features reduced to
    ``dims`` principal components, when it holds at most ``max_share`` of the class. (The paper
    reduced by ICA; whitened components weigh noise like signal, so PCA, as in common
    reimplementations, separates the poisons better.)"""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    flagged = np.zeros(labels.shape[0], bool)
    for cls in np.unique(labels):
        index = np.flatnonzero(labels == cls)
        if index.size < 2 * dims:
            continue
        reduced = PCA(n_components=min(dims, features.shape[1]), random_state=seed).fit_transform(
            features[index]
        )
        assignment = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(reduced)
        smaller = int(np.bincount(assignment, minlength=2).argmin())
        members = assignment == smaller
        if members.mean() <= max_share:
            flagged[index[members]] = True
    return flagged
