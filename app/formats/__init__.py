"""Reading uploaded datasets: a cheap inspection for the API, the full load for the worker.

Torch-free, so the API process can use it. Every refusal is a ``DatasetError`` whose message
a person can act on. ``image_size`` is the upload option of that name (``app/formats/sizing.py``:
None keeps images of one size as they are and brings mixed sizes to 32 x 32).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import get_args

from app.formats import imagefolder, npz, parquet
from app.formats.base import DatasetError, DatasetFormat, DatasetInfo, Limits, LoadedDataset
from app.formats.detect import detect_format
from app.formats.sizing import DEFAULT_IMAGE_SIZE, MAX_IMAGE_SIZE, check_image_size_option

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "MAX_IMAGE_SIZE",
    "DatasetError",
    "DatasetFormat",
    "DatasetInfo",
    "Limits",
    "LoadedDataset",
    "detect_format",
    "inspect_dataset",
    "load_dataset",
]

FilePath = str | os.PathLike[str]
_Reader = tuple[
    Callable[[FilePath, Limits, int | None], DatasetInfo],
    Callable[[FilePath, Limits, int | None], LoadedDataset],
]
_READERS: dict[str, _Reader] = {
    "npz": (npz.inspect, npz.load),
    "imagefolder": (imagefolder.inspect, imagefolder.load),
    "parquet": (parquet.inspect, parquet.load),
}
_DEFAULT_LIMITS = Limits()


def inspect_dataset(
    path: FilePath,
    fmt: DatasetFormat | None = None,
    *,
    limits: Limits = _DEFAULT_LIMITS,
    image_size: int | None = None,
) -> DatasetInfo:
    """What the dataset holds, from headers, metadata and labels only: cheap at upload time.
    Its ``image_shape`` is what ``load_dataset`` with the same ``image_size`` returns."""
    check_image_size_option(image_size)
    inspect, _ = _reader(path, fmt, limits)
    return inspect(path, limits, image_size)


def load_dataset(
    path: FilePath,
    fmt: DatasetFormat | None = None,
    *,
    limits: Limits = _DEFAULT_LIMITS,
    image_size: int | None = None,
) -> LoadedDataset:
    """Every image decoded into one uint8 array, with int64 labels."""
    check_image_size_option(image_size)
    _, load = _reader(path, fmt, limits)
    return load(path, limits, image_size)


def _reader(path: FilePath, fmt: DatasetFormat | None, limits: Limits) -> _Reader:
    fmt = detect_format(path, limits) if fmt is None else fmt
    if fmt not in _READERS:
        raise DatasetError(
            f"unknown format '{fmt}'; accepted: {', '.join(get_args(DatasetFormat))}"
        )
    return _READERS[fmt]
