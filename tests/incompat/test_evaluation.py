from __future__ import annotations

import numpy as np
import pytest

from incompat.research.attacks import poison
from incompat.research.datasets import balanced_subset, load_fashion_mnist
from incompat.research.evaluation import RetrainedModel, retrained_attack_success


@pytest.mark.slow
def test_attack_succeeds_without_defence_and_fails_once_poisons_are_removed(fashion_mnist) -> None:
    images, labels = fashion_mnist
    subset = balanced_subset(labels, 2000, seed=0)
    planted = poison(images[subset], labels[subset], source=1, target=7, eps=0.3,
                     shape="pattern", seed=0)  # fmt: skip
    test_images, test_labels = load_fashion_mnist("test")
    test = balanced_subset(test_labels, 1000, seed=0)
    run = lambda keep: retrained_attack_success(  # noqa: E731
        planted, keep, test_images[test], test_labels[test], epochs=15, seed=0, device="cpu"
    )
    undefended = run(np.ones(planted.labels.size, bool))
    defended = run(~planted.is_poison)
    assert undefended.clean_accuracy > 0.7
    assert defended.clean_accuracy > 0.7
    assert undefended.attack_success > 0.3
    assert defended.attack_success < 0.05


@pytest.mark.slow
def test_features_and_attack_success_of_an_all_to_one_attack(fashion_mnist) -> None:
    images, labels = fashion_mnist
    subset = balanced_subset(labels, 1000, seed=1)
    planted = poison(images[subset], labels[subset], sources="all", target=0, eps=0.2,
                     shape="patch", size=3, placement="corner", seed=1)  # fmt: skip
    model = RetrainedModel(planted, np.ones(planted.labels.size, bool), epochs=1, seed=0,
                           device="cpu")  # fmt: skip
    features = model.features()
    assert features.shape == (1000, 64)  # the small CNN's pooled width
    assert np.isfinite(features).all()
    assert model.features(planted.images[:7]).shape == (7, 64)
    test_images, test_labels = load_fashion_mnist("test")
    outcome = model.outcome(test_images[:500], test_labels[:500])
    assert 0 <= outcome.attack_success <= 1
    assert 0 <= outcome.clean_accuracy <= 1
