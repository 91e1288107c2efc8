"""Thumbnails of samples for the report: PNG, small images enlarged with nearest-neighbour so a
one-pixel trigger stays visible."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

TARGET_SIDE = 112  # pixels, about
MAX_SIDE = 160


def thumbnail_png(image: np.ndarray) -> bytes:
    """``image``: uint8, H x W or H x W x C (C = 1 or 3)."""
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    picture = Image.fromarray(np.ascontiguousarray(image))
    side = max(picture.size)
    if side < TARGET_SIDE:
        factor = max(1, TARGET_SIDE // side)
        picture = picture.resize(
            (picture.width * factor, picture.height * factor), Image.Resampling.NEAREST
        )
    elif side > MAX_SIDE:
        picture.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
