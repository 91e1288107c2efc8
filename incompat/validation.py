"""Input validation for the engine: every check on user data lives here."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from incompat.config import EngineConfig
from incompat.errors import InvalidDatasetError

MIN_IMAGE_SIDE = 8
# The smallest cluster should still hold enough samples to train on.
MIN_SAMPLES_PER_CLUSTER = 32


@dataclass(frozen=True)
class Dataset:
    """Validated inputs: images as uint8 N x H x W x C, labels re-indexed to 0..K-1."""

    images: np.ndarray
    labels: np.ndarray  # int64, values in 0..K-1
    classes: np.ndarray  # the original label value of each class index, sorted

    @property
    def num_classes(self) -> int:
        return int(self.classes.size)


def min_samples(config: EngineConfig) -> int:
    return math.ceil(MIN_SAMPLES_PER_CLUSTER / config.cluster_frac)


def validate(images: object, labels: object, config: EngineConfig) -> Dataset:
    """Check the arrays' types, shapes and sizes; raise ``InvalidDatasetError`` saying what is
    wrong."""
    if not isinstance(images, np.ndarray):
        raise InvalidDatasetError(f"images must be a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise InvalidDatasetError(f"images must be uint8 (0-255), got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise InvalidDatasetError(
            f"images must be N x H x W or N x H x W x C with C = 1 or 3, got shape {images.shape}"
        )
    n, height, width, _ = images.shape
    if min(height, width) < MIN_IMAGE_SIDE:
        raise InvalidDatasetError(
            f"images must be at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels, "
            f"got {height}x{width}"
        )

    labels_array = np.asarray(labels)
    if labels_array.dtype == object or not np.issubdtype(labels_array.dtype, np.integer):
        if (
            labels_array.dtype.kind == "f"
            and labels_array.size
            and np.all(np.isfinite(labels_array) & (labels_array == np.round(labels_array)))
        ):
            labels_array = labels_array.astype(np.int64)
        else:
            raise InvalidDatasetError(f"labels must be integers, got dtype {labels_array.dtype}")
    if labels_array.ndim != 1:
        raise InvalidDatasetError(f"labels must be one-dimensional, got shape {labels_array.shape}")
    if labels_array.shape[0] != n:
        raise InvalidDatasetError(f"got {n} images but {labels_array.shape[0]} labels")

    classes, encoded = np.unique(labels_array, return_inverse=True)
    if classes.size < 2:
        raise InvalidDatasetError(f"need at least 2 classes, got {classes.size}")
    needed = min_samples(config)
    if n < needed:
        raise InvalidDatasetError(
            f"need at least {needed} samples for this configuration "
            f"(cluster_frac={config.cluster_frac}), got {n}"
        )
    return Dataset(images=images, labels=encoded.astype(np.int64), classes=classes)
