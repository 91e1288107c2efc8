"""Decoding uploaded PNG/JPEG bytes into uint8 arrays that all share the first image's shape."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

from app.formats.base import DatasetError, Limits, check_image_shape

_PIL_FORMATS = ("PNG", "JPEG")
_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
# 16-bit grayscale PNGs; PIL's convert("L") would clip them to 255 rather than scale them.
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


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


def peek_shape(data: bytes, name: str, limits: Limits) -> tuple[int, ...]:
    with open_image(data, name, limits) as image:
        return decoded_shape(image)


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


class ImageStack:
    """Decodes images into one preallocated N x H x W (x 3) array, shaped like the first image."""

    def __init__(self, n: int, first: bytes, first_name: str, limits: Limits) -> None:
        self.shape = peek_shape(first, first_name, limits)
        check_image_shape(self.shape, n, limits, f"'{first_name}'")
        self.images: npt.NDArray[np.uint8] = np.empty((n, *self.shape), np.uint8)
        self._first_name = first_name
        self._limits = limits

    def put(self, index: int, data: bytes, name: str) -> None:
        with open_image(data, name, self._limits) as image:
            shape = decoded_shape(image)
            if shape[:2] != self.shape[:2]:
                raise DatasetError(
                    f"'{name}' is {shape[0]}x{shape[1]} but '{self._first_name}' (the first "
                    f"image) is {self.shape[0]}x{self.shape[1]}; all images must have one size"
                )
            if len(shape) > len(self.shape):
                raise DatasetError(
                    f"'{name}' is in color ({image.mode}) but '{self._first_name}' (the first "
                    "image) is grayscale; all images must have one mode"
                )
            array = to_array(image, name)
        # A grayscale image among color ones becomes color without losing anything.
        self.images[index] = array[..., None] if array.ndim < len(self.shape) else array
