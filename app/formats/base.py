"""Types shared by every reader, and the checks that every format applies alike."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

DatasetFormat = Literal["npz", "imagefolder", "parquet"]
FORMATS: tuple[DatasetFormat, ...] = ("npz", "imagefolder", "parquet")

# Smaller images carry too little for the engine's crops and convolutions.
MIN_IMAGE_SIDE = 8
MAX_CLASS_NAME = 256  # characters


class DatasetError(ValueError):
    """The file is not a dataset this service can read; the message says why (a person reads it)."""


@dataclass(frozen=True)
class Limits:
    """What an upload may cost the service; files beyond these are refused, not truncated.

    ``max_member_bytes`` bounds one image file (or small array) inside a zip. An npz's ``x`` array
    is the whole dataset in one member, so it is bounded by ``max_total_bytes`` instead, which also
    bounds the decoded image array of every format.
    """

    max_samples: int = 5_000_000
    max_image_side: int = 4096  # per side
    # Width x height, from the header before decoding: what decoding one image may cost.
    max_image_pixels: int = 40_000_000
    max_member_bytes: int = 64 * 2**20  # one zip member, uncompressed
    max_total_bytes: int = 64 * 2**30  # whole archive, uncompressed
    max_compression_ratio: float = 200.0

    @property
    def max_entries(self) -> int:
        """Entries a zip may list: each sample, a macOS ``._`` twin of it, and some folders."""
        return 2 * self.max_samples + 1024


@dataclass(frozen=True)
class DatasetInfo:
    """What the cheap inspection learns without decoding the images.

    ``n_classes`` counts the distinct label values present; ``classes`` names label values
    0..K-1 where the file says so (and may name classes that have no samples).
    """

    format: DatasetFormat
    n_samples: int
    image_shape: tuple[int, ...]  # (H, W) or (H, W, C) as the full load returns each image
    n_classes: int
    classes: list[str] | None


@dataclass(frozen=True)
class LoadedDataset:
    images: npt.NDArray[np.uint8]  # N x H x W or N x H x W x C
    labels: npt.NDArray[np.int64]  # N
    classes: list[str] | None
    # Per index: an ImageFolder's member path (root included), or the path a parquet row's image
    # carries (None for a row without one); None for an npz, or a parquet file without paths.
    paths: Sequence[str | None] | None


def check_sample_count(n: int, limits: Limits) -> None:
    if n < 0:
        raise DatasetError(f"the file declares {n} samples: it is corrupt")
    if n == 0:
        raise DatasetError("the dataset holds no samples")
    if n > limits.max_samples:
        raise DatasetError(f"the dataset holds {n} samples; at most {limits.max_samples} allowed")


def check_image_shape(shape: tuple[int, ...], n: int, limits: Limits, where: str) -> None:
    """``shape`` is one image's (H, W) or (H, W, C); ``where`` names the image for the message."""
    check_image_size(shape[0], shape[1], limits, where)
    check_decoded_bytes(shape, n, limits)


def check_image_size(height: int, width: int, limits: Limits, where: str) -> None:
    """One image's sides and pixel count; ``where`` names the image for the message."""
    if min(height, width) < MIN_IMAGE_SIDE:
        raise DatasetError(
            f"{where} is {height}x{width}; images must be at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels"
        )
    if max(height, width) > limits.max_image_side:
        raise DatasetError(
            f"{where} is {height}x{width}; images may be at most "
            f"{limits.max_image_side} pixels per side"
        )
    if height * width > limits.max_image_pixels:
        raise DatasetError(
            f"{where} is {height}x{width}, {height * width} pixels; images may have at most "
            f"{limits.max_image_pixels} pixels"
        )


def check_decoded_bytes(shape: tuple[int, ...], n: int, limits: Limits) -> None:
    """``n`` images of ``shape`` (one image's, as decoded) fit the decoded-size bound."""
    decoded = n * math.prod(shape)
    if decoded > limits.max_total_bytes:
        raise DatasetError(
            f"{n} images of {'x'.join(map(str, shape))} take {decoded} bytes decoded; "
            f"at most {limits.max_total_bytes} allowed"
        )


def check_labels(labels: npt.NDArray[np.int64], classes: list[str] | None) -> int:
    """The number of distinct labels, after checking there are two and that names cover them."""
    distinct = np.unique(labels)
    if distinct.size < 2:
        only = f"every sample has label {distinct[0]}" if distinct.size else "there are no labels"
        raise DatasetError(f"{only}; an audit needs at least 2 classes")
    if classes is not None and (distinct[0] < 0 or distinct[-1] >= len(classes)):
        bad = distinct[0] if distinct[0] < 0 else distinct[-1]
        raise DatasetError(
            f"label {bad} has no class name: {len(classes)} names cover labels "
            f"0..{len(classes) - 1}"
        )
    return int(distinct.size)


def check_class_names(names: list[str], where: str) -> list[str]:
    """Class names as text a report, a database and a browser can all hold: printable, and of a
    sane length. (A lone surrogate or a NUL would pass Python but fail PostgreSQL or the page.)"""
    for label, name in enumerate(names):
        if not name.isprintable():
            raise DatasetError(
                f"{where}: the name of class {label} ({name!a}) holds characters that are "
                "not printable text (control characters, NUL or lone surrogates)"
            )
        if len(name) > MAX_CLASS_NAME:
            raise DatasetError(
                f"{where}: the name of class {label} is {len(name)} characters long; "
                f"at most {MAX_CLASS_NAME} allowed"
            )
    return names


def as_int64_labels(labels: npt.NDArray[Any], where: str) -> npt.NDArray[np.int64]:
    """Integer labels as int64, refusing uint64 values that would wrap around."""
    if labels.dtype == np.uint64 and labels.size and labels.max() > np.iinfo(np.int64).max:
        raise DatasetError(f"{where} holds label {labels.max()}, too large for int64")
    return labels.astype(np.int64)
