"""Decoding uploaded PNG/JPEG bytes into one uint8 array: every image one size and one layout.

Every image's header is read first (``survey``): the sizes, as displayed (after the EXIF
orientation), and the modes decide the array's shape before any pixel is decoded
(``app/formats/sizing.py`` and ``app/formats/modes.py`` say how). Then each image is decoded,
oriented, converted and resized into its place (``decode_all``).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin

from app.formats.base import DatasetError, Limits, check_decoded_bytes, check_image_size
from app.formats.modes import in_layout, is_colour
from app.formats.sizing import fit, target_size

Named = tuple[str, bytes]  # (where the image is, for messages; its encoded bytes)

# By magic number. PIL's plugin classes are called rather than ``Image.open``, which would apply
# PIL's own decompression-bomb bound (``Image.MAX_IMAGE_PIXELS``) before the service's: the
# service's ``MAX_IMAGE_PIXELS`` decides, and its refusal names the file.
_OPENERS: tuple[tuple[bytes, type[ImageFile.ImageFile]], ...] = (
    (b"\x89PNG\r\n\x1a\n", PngImagePlugin.PngImageFile),
    (b"\xff\xd8\xff", JpegImagePlugin.JpegImageFile),
)
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
_ORIENTATION_TAG = 0x0112
# What each EXIF orientation asks of the stored pixels, as ``PIL.ImageOps.exif_transpose`` does it.
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset(_TRANSPOSES[orientation] for orientation in (5, 6, 7, 8))


@dataclass(frozen=True)
class Plan:
    """What every decoded image becomes: its (H, W), and colour (H x W x 3) or grey (H x W)."""

    size: tuple[int, int]
    colour: bool

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.size, 3) if self.colour else self.size


def open_image(data: bytes, name: str, limits: Limits) -> Image.Image:
    """The image with only its header read, after checking its size before any pixel is decoded."""
    opener = next((kind for magic, kind in _OPENERS if data.startswith(magic)), None)
    if opener is None:
        raise DatasetError(f"'{name}' is not a readable PNG or JPEG image: it starts like neither")
    try:
        image = opener(io.BytesIO(data))
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"'{name}' is not a readable PNG or JPEG image: {exc}") from exc
    width, height = image.size
    try:
        check_image_size(height, width, limits, f"'{name}'")
    except DatasetError:
        image.close()
        raise
    return image


def survey(
    n: int, images: Iterable[Named], limits: Limits, image_size: int | None, *, verify: bool
) -> Plan:
    """The plan for decoding the ``n`` images, from every image's header: the size they share, or
    the one they are brought to, and colour as soon as one image is. With ``verify``, also PIL's
    structural check of each image (for PNG, every chunk's checksum), without decoding pixels."""
    first: tuple[int, int] | None = None
    all_alike = True
    colour = False
    for name, data in images:
        with open_image(data, name, limits) as image:
            size = _displayed_size(image)
            first = first or size
            all_alike = all_alike and size == first
            colour = colour or is_colour(image.mode)
            if verify:
                _verify(image, name)
    if first is None:
        raise DatasetError("the dataset holds no images")
    plan = Plan(target_size(first, all_alike, image_size), colour)
    check_decoded_bytes(plan.shape, n, limits)
    return plan


def decode_all(
    n: int, images: Callable[[], Iterable[Named]], limits: Limits, image_size: int | None
) -> npt.NDArray[np.uint8]:
    """The ``n`` images decoded into one N x H x W (x 3) array, as ``survey`` plans it.
    ``images`` is called twice: once for the headers, once for the pixels."""
    plan = survey(n, images(), limits, image_size, verify=False)
    stack = np.empty((n, *plan.shape), np.uint8)
    count = 0
    for index, (name, data) in enumerate(images()):
        if index == n:
            raise DatasetError(f"expected {n} images, found more")
        with open_image(data, name, limits) as image:
            stack[index] = _decode(image, name, plan)
        count = index + 1
    if count != n:
        raise DatasetError(f"expected {n} images, found {count}")
    return stack


def _decode(image: Image.Image, name: str, plan: Plan) -> npt.NDArray[np.uint8]:
    # Read before decoding: a PNG's EXIF after its pixels would show up only then, and the
    # survey, which reads headers alone, must reach the same size.
    transpose = _transpose(image)
    try:
        image.load()
        oriented = image if transpose is None else image.transpose(transpose)
        return np.asarray(fit(in_layout(oriented, plan.colour), plan.size), dtype=np.uint8)
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"'{name}' is a corrupt image: {exc}") from exc


def _displayed_size(image: Image.Image) -> tuple[int, int]:
    """(H, W) as a viewer shows the image, its EXIF orientation applied."""
    width, height = image.size
    return (width, height) if _transpose(image) in _SWAPS_SIDES else (height, width)


def _transpose(image: Image.Image) -> Image.Transpose | None:
    """What the EXIF orientation in the header asks of the stored pixels (JPEG's APP1, a PNG's
    eXIf chunk before its pixels); None when nothing."""
    raw = image.info.get("exif")
    if not isinstance(raw, bytes):
        return None
    exif = Image.Exif()
    try:
        exif.load(raw)
        orientation = exif.get(_ORIENTATION_TAG)
    except Exception:  # a damaged EXIF block orients nothing, as in web browsers
        return None
    return _TRANSPOSES.get(orientation) if isinstance(orientation, int) else None


def _verify(image: Image.Image, name: str) -> None:
    """PIL's structural check: for PNG, every chunk and its CRC through IEND (JPEG: nothing)."""
    try:
        image.verify()
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"'{name}' is a truncated or corrupt image: {exc}") from exc
