"""One size for every image: the ``image_size`` upload option, and the size of a mixed dataset.

Without the option, images of one size are kept as they are, and a dataset of mixed sizes is
brought to ``DEFAULT_IMAGE_SIZE``; with it, every image is brought to ``image_size``. An image is
brought to S x S by scaling its short side to S, keeping its aspect, and cropping the centre:
what torchvision's ``Resize(S)`` then ``CenterCrop(S)`` do to a training set, so the audit sees
the images as such a pipeline feeds them to a model. Nothing is stretched; only the long side
loses its ends.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from app.formats.base import MIN_IMAGE_SIDE

# The option's upper bound: the decoded array and the engine's cost grow with its square, and its
# networks, designed for CIFAR's 32 x 32, see little more in larger images.
MAX_IMAGE_SIZE = 512
# A dataset of mixed sizes needs one size: CIFAR's, the input the engine's networks (ResNet-20/32,
# PreAct ResNet-18) were designed for, and small enough that a large dataset's array stays small.
DEFAULT_IMAGE_SIZE = 32
# A large image is first shrunk by an integer factor (a box filter) while it is at least this many
# times the target, then resampled: far faster for photos, and alike to one full pass (PIL's docs).
_REDUCING_GAP = 3.0


def check_image_size_option(image_size: int | None) -> None:
    """``ValueError`` outside the option's bounds: the caller's mistake, not the file's."""
    if image_size is not None and not MIN_IMAGE_SIDE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be from {MIN_IMAGE_SIDE} to {MAX_IMAGE_SIZE}; got {image_size}"
        )


def target_size(first: tuple[int, int], all_alike: bool, image_size: int | None) -> tuple[int, int]:
    """The (H, W) every image is brought to, given the first image's and whether all share it."""
    if image_size is not None:
        return (image_size, image_size)
    return first if all_alike else (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)


def sized_shape(shape: tuple[int, ...], image_size: int | None) -> tuple[int, ...]:
    """One image's shape, (H, W) or (H, W, C), once brought to ``image_size`` when that is given."""
    if image_size is None:
        return shape
    return (image_size, image_size, *shape[2:])


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` at ``size`` (H, W): as it is when it has that size, else brought to that square
    (a size other images are brought to is always one)."""
    height, width = size
    if image.size == (width, height):
        return image
    if height != width:
        raise ValueError(f"images are brought to squares only, not to {height}x{width}")
    return to_square(image, height)


def to_square(image: Image.Image, side: int) -> Image.Image:
    """The centred square of ``image`` as wide as its short side, resampled to ``side``: the short
    side scaled to ``side`` and the centre cropped, in one resampling and without rounding the
    crop to whole pixels of the scaled image."""
    width, height = image.size
    short = min(width, height)
    left, top = (width - short) / 2, (height - short) / 2
    # LANCZOS keeps a shrunk image sharp without aliasing; enlarging with it rings at edges.
    resample = Image.Resampling.LANCZOS if short > side else Image.Resampling.BILINEAR
    return image.resize(
        (side, side),
        resample,
        box=(left, top, left + short, top + short),
        reducing_gap=_REDUCING_GAP,
    )


def square_stack(images: npt.NDArray[np.uint8], side: int) -> npt.NDArray[np.uint8]:
    """N x H x W (x C) images as N x side x side (x C), each brought there by ``to_square``."""
    squares = np.empty((images.shape[0], side, side, *images.shape[3:]), np.uint8)
    for index, pixels in enumerate(images):
        # PIL holds one band or three; a single channel axis is put back around it.
        single = pixels.ndim == 3 and pixels.shape[-1] == 1
        image = Image.fromarray(pixels[..., 0] if single else pixels)
        squares[index] = np.asarray(to_square(image, side)).reshape(squares.shape[1:])
    return squares
