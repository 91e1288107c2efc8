"""Shared fixtures: real Fashion-MNIST images (Debian's dataset-fashion-mnist)."""

from __future__ import annotations

import numpy as np
import pytest

from incompat.datasets import FASHION_MNIST_DIR, balanced_subset, load_fashion_mnist


@pytest.fixture(scope="session")
def fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(
            f"Fashion-MNIST is missing from {FASHION_MNIST_DIR}: "
            "apt-get install dataset-fashion-mnist"
        )
    return load_fashion_mnist()


@pytest.fixture(scope="session")
def small_fashion(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """600 class-balanced images: enough for the engine's mechanics, seconds to run."""
    images, labels = fashion_mnist
    index = balanced_subset(labels, 600, seed=0)
    return images[index], labels[index]
