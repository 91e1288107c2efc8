"""``.npz`` uploads: uint8 images ``x``, integer labels ``y``, optional class names ``classes``.

The images are of one shape already; they are resized only when the upload asks for an
``image_size`` (``app/formats/sizing.py``).

Never unpickles (user files are untrusted). Inspection reads the ``.npy`` headers and the small
arrays; only the full load reads ``x``'s data.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from tokenize import TokenError

import numpy as np
import numpy.typing as npt

from app.formats.base import (
    DatasetError,
    DatasetInfo,
    Limits,
    LoadedDataset,
    as_int64_labels,
    check_class_names,
    check_decoded_bytes,
    check_image_shape,
    check_labels,
    check_sample_count,
)
from app.formats.sizing import sized_shape, square_stack
from app.formats.zipsafe import MEMBER_ERRORS, check_member, check_total, open_zip

_ARRAY_ERRORS = (ValueError, *MEMBER_ERRORS)


@dataclass(frozen=True)
class _Header:
    dtype: np.dtype[np.generic]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _Parsed:
    """Everything but x's pixels."""

    x: zipfile.ZipInfo
    shape: tuple[int, ...]
    labels: npt.NDArray[np.int64]
    classes: list[str] | None
    n_classes: int


def inspect(path: str | os.PathLike[str], limits: Limits, image_size: int | None) -> DatasetInfo:
    with open_zip(path, limits) as archive:
        parsed = _parse(archive, limits, image_size)
    return DatasetInfo(
        format="npz",
        n_samples=parsed.shape[0],
        image_shape=sized_shape(parsed.shape[1:], image_size),
        n_classes=parsed.n_classes,
        classes=parsed.classes,
    )


def load(path: str | os.PathLike[str], limits: Limits, image_size: int | None) -> LoadedDataset:
    """The arrays as stored; with ``image_size``, each image brought to that square."""
    with open_zip(path, limits) as archive:
        parsed = _parse(archive, limits, image_size)
        images = np.ascontiguousarray(_read_array(archive, parsed.x), dtype=np.uint8)
    images = images.reshape(parsed.shape)
    if image_size is not None and images.shape[1:3] != (image_size, image_size):
        images = square_stack(images, image_size)
    return LoadedDataset(
        images=images,
        labels=parsed.labels,
        classes=parsed.classes,
        paths=None,
    )


def _parse(archive: zipfile.ZipFile, limits: Limits, image_size: int | None) -> _Parsed:
    members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
    missing = [name for name in ("x", "y") if name not in members]
    if missing:
        held = sorted(name for name in members if not name.endswith("/"))
        raise DatasetError(
            "the .npz must hold arrays 'x' (images) and 'y' (labels); "
            f"missing {missing}, it holds {held}"
        )
    used = [members[name] for name in ("x", "y", "classes") if name in members]
    for info in used:
        # x is the whole dataset in one member, so only the total bounds it.
        budget = limits.max_total_bytes if info is members["x"] else limits.max_member_bytes
        check_member(info, budget, limits)
    check_total(used, limits)

    shape = _image_shape(archive, members["x"], limits)
    check_decoded_bytes(sized_shape(shape[1:], image_size), shape[0], limits)
    labels = _labels(archive, members["y"], shape[0])
    classes = _class_names(archive, members["classes"]) if "classes" in members else None
    return _Parsed(members["x"], shape, labels, classes, check_labels(labels, classes))


def _image_shape(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits
) -> tuple[int, ...]:
    header = _read_header(archive, info)
    if header.dtype != np.uint8:
        raise DatasetError(f"'x' must be uint8 images (0-255), got dtype {header.dtype}")
    shape = header.shape
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3)):
        raise DatasetError(f"'x' must be N x H x W or N x H x W x C (C = 1 or 3), got {shape}")
    check_sample_count(shape[0], limits)
    check_image_shape(shape[1:], shape[0], limits, "each image in 'x'")
    return shape


def _labels(archive: zipfile.ZipFile, info: zipfile.ZipInfo, n: int) -> npt.NDArray[np.int64]:
    header = _read_header(archive, info)
    if len(header.shape) != 1 or header.dtype.kind not in "iu":
        raise DatasetError(
            f"'y' must be a 1-D integer array, got {header.dtype} of shape {header.shape}"
        )
    if header.shape[0] != n:
        raise DatasetError(f"'x' has {n} images but 'y' has {header.shape[0]} labels")
    return as_int64_labels(_read_array(archive, info), "'y'")


def _class_names(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> list[str]:
    header = _read_header(archive, info)
    if len(header.shape) != 1 or header.dtype.kind != "U":
        raise DatasetError(
            "'classes' must be a 1-D array of strings (one name per label value), "
            f"got {header.dtype} of shape {header.shape}"
        )
    names = _read_array(archive, info)
    # A UCS-4 code unit above U+10FFFF is no character: numpy's str() fails on it with a
    # SystemError, so it is refused while still a number.
    if names.dtype.itemsize and (_code_points(names) > 0x10FFFF).any():
        raise DatasetError("'classes' holds a code point beyond Unicode (above U+10FFFF)")
    return check_class_names([str(name) for name in names], "'classes'")


def _code_points(names: npt.NDArray[np.generic]) -> npt.NDArray[np.uint32]:
    unit = np.dtype(np.uint32).newbyteorder(names.dtype.byteorder)
    return np.ascontiguousarray(names).view(unit)


def _read_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Header:
    name = info.filename.removesuffix(".npy")
    try:
        with archive.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise DatasetError(f"'{name}' uses unsupported .npy format version {version}")
    except TokenError as exc:
        # numpy's fallback parser for Python 2 headers lets this through: a header cut short.
        raise DatasetError(
            f"'{name}' is not a readable .npy array: its header is cut short"
        ) from exc
    except _ARRAY_ERRORS as exc:
        raise DatasetError(f"'{name}' is not a readable .npy array: {exc}") from exc
    if dtype.hasobject:
        raise DatasetError(
            f"'{name}' is an object array, which can only be read by unpickling; "
            "object arrays are refused (save plain numeric or string arrays)"
        )
    header = _Header(dtype, tuple(int(side) for side in shape))
    _check_fits(header, info, name)
    return header


def _check_fits(header: _Header, info: zipfile.ZipInfo, name: str) -> None:
    """Refuses a header that claims more data than its member holds: numpy allocates the whole
    array from the header before reading, so a few bytes could ask for terabytes."""
    if any(side < 0 for side in header.shape):
        raise DatasetError(f"'{name}' is corrupt: its header gives the shape {header.shape}")
    nbytes = math.prod(header.shape) * header.dtype.itemsize
    if nbytes > info.file_size:
        raise DatasetError(
            f"'{name}' is truncated: its header says {header.shape} of {header.dtype} "
            f"({nbytes} bytes) but the member holds {info.file_size} bytes"
        )


def _read_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> npt.NDArray[np.generic]:
    """The array of a member whose header was checked; reads exactly what the header declares."""
    name = info.filename.removesuffix(".npy")
    try:
        with archive.open(info) as stream:
            array: npt.NDArray[np.generic] = np.lib.format.read_array(stream, allow_pickle=False)
    except _ARRAY_ERRORS as exc:
        raise DatasetError(f"'{name}' is truncated or corrupt: {exc}") from exc
    return array
