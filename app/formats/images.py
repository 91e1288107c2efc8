"""Decoding uploaded PNG/JPEG bytes into uint8 arrays that all share the first image's shape.

The first image sets the size and mode. A grayscale image among color ones becomes color without
losing anything; a color image among grayscale ones, or an image of another size, is refused.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from app.formats.base import DatasetError, Limits, check_image_shape

Named = tuple[str, bytes]  # (where the image is, for messages; its encoded bytes)

_PIL_FORMATS = ("PNG", "JPEG")
_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
# 16-bit grayscale PNGs; PIL's convert("L") would clip them to 255 rather than scale them.
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
# What PIL's parsers and decoders raise on hostile bytes (struct.error: a chunk cut short).
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    Image.DecompressionBombError,
)


def open_image(data: bytes, name: str, limits: Limits) -> Image.Image:
    """The image with only its header read, after checking its size before any pixel is decoded."""
    try:
        image = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"'{name}' is not a readable PNG or JPEG image: {exc}") from exc
    width, height = image.size
    if max(width, height) > limits.max_image_side:
        image.close()
        raise DatasetError(
            f"'{name}' is {height}x{width}; images may be at most "
            f"{limits.max_image_side} pixels per side"
        )
    return image


def decoded_shape(image: Image.Image) -> tuple[int, ...]:
    """(H, W) for grayscale modes, (H, W, 3) for everything else (palette, alpha, CMYK...)."""
    if image.mode in _GRAY_MODES or image.mode in _WIDE_GRAY_MODES:
        return (image.height, image.width)
    return (image.height, image.width, 3)


def to_array(image: Image.Image, name: str) -> npt.NDArray[np.uint8]:
    try:
        if image.mode in _WIDE_GRAY_MODES:
            wide = np.asarray(image).astype(np.int64).clip(0, 65535)
            return (wide >> 8).astype(np.uint8)
        if image.mode in _GRAY_MODES:
            converted = image.convert("L")
        elif image.mode == "P" and "transparency" in image.info:
            converted = image.convert("RGBA").convert("RGB")
        else:
            converted = image.convert("RGB")
        return np.asarray(converted, dtype=np.uint8)
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"'{name}' is a corrupt image: {exc}") from exc


@dataclass(frozen=True)
class _First:
    """The first image: every other must match its size, and be grayscale if it is."""

    name: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, image: Image.Image, name: str, n: int, limits: Limits) -> _First:
        shape = decoded_shape(image)
        check_image_shape(shape, n, limits, f"'{name}'")
        return cls(name, shape)

    def check(self, image: Image.Image, name: str) -> None:
        shape = decoded_shape(image)
        if shape[:2] != self.shape[:2]:
            raise DatasetError(
                f"'{name}' is {shape[0]}x{shape[1]} but '{self.name}' (the first image) is "
                f"{self.shape[0]}x{self.shape[1]}; all images must have one size"
            )
        if len(shape) > len(self.shape):
            raise DatasetError(
                f"'{name}' is in color ({image.mode}) but '{self.name}' (the first image) is "
                "grayscale; all images must have one mode"
            )


def check_headers(n: int, images: Iterable[Named], limits: Limits) -> tuple[int, ...]:
    """The shape of each decoded image, after checking every image's header against the first's
    and every PNG's chunk checksums (a truncated or damaged PNG), without decoding any pixel."""
    first: _First | None = None
    for name, data in images:
        with open_image(data, name, limits) as image:
            if first is None:
                first = _First.of(image, name, n, limits)
            else:
                first.check(image, name)
            _verify(image, name)
    if first is None:
        raise DatasetError("the dataset holds no images")
    return first.shape


def decode_all(n: int, images: Iterable[Named], limits: Limits) -> npt.NDArray[np.uint8]:
    """The ``n`` images decoded into one N x H x W (x 3) array, shaped like the first."""
    first: _First | None = None
    stack: npt.NDArray[np.uint8] | None = None
    count = 0
    for index, (name, data) in enumerate(images):
        if index == n:
            raise DatasetError(f"expected {n} images, found more")
        with open_image(data, name, limits) as image:
            if first is None:
                first = _First.of(image, name, n, limits)
                stack = np.empty((n, *first.shape), np.uint8)
            else:
                first.check(image, name)
            array = to_array(image, name)
        assert stack is not None
        stack[index] = array[..., None] if array.ndim < stack.ndim - 1 else array
        count = index + 1
    if stack is None or count != n:
        raise DatasetError(f"expected {n} images, found {count}")
    return stack


def _verify(image: Image.Image, name: str) -> None:
    """PIL's structural check: for PNG, every chunk and its CRC through IEND (JPEG: nothing)."""
    try:
        image.verify()
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"'{name}' is a truncated or corrupt image: {exc}") from exc
