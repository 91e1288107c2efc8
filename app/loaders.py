"""Readers for uploaded datasets. Never unpickles: user files are untrusted."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np


class DatasetError(ValueError):
    """The file is not a dataset this service can read; the message says why."""


@dataclass(frozen=True)
class LoadedDataset:
    images: np.ndarray  # uint8, N x H x W or N x H x W x C
    labels: np.ndarray  # int64, N


def load_npz(path: str | os.PathLike[str]) -> LoadedDataset:
    """An npz with ``x`` (uint8 images) and ``y`` (integer labels), read with allow_pickle=False."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"not a readable .npz file: {exc}") from exc
    with archive:
        missing = {"x", "y"} - set(archive.files)
        if missing:
            raise DatasetError(
                "the .npz must hold arrays 'x' (images) and 'y' (labels); "
                f"missing {sorted(missing)}"
            )
        try:
            images, labels = archive["x"], archive["y"]
        except ValueError as exc:  # object arrays need pickle, which is refused
            raise DatasetError(f"cannot read arrays: {exc}") from exc
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise DatasetError(f"the .npz file is truncated or corrupt: {exc}") from exc
    if images.dtype != np.uint8:
        raise DatasetError(f"'x' must be uint8 images (0-255), got dtype {images.dtype}")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise DatasetError(
            f"'x' must be N x H x W or N x H x W x C (C = 1 or 3), got {images.shape}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"'y' must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DatasetError(f"'x' has {images.shape[0]} images but 'y' has {labels.shape[0]} labels")
    return LoadedDataset(images=images, labels=labels.astype(np.int64))
