"""Writers of dataset files in each upload format, for tests and benchmarks (no pytest here)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

FilePath = str | os.PathLike[str]


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of one uint8 image: H x W (or H x W x 1) gray, or H x W x 3 RGB."""
    pixels = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()


def write_npz(
    path: FilePath,
    images: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str] | None = None,
    compressed: bool = False,
) -> None:
    arrays: dict[str, Any] = {"x": np.asarray(images), "y": np.asarray(labels)}
    if classes is not None:
        arrays["classes"] = np.array(list(classes), dtype=str)
    # Through a file object, since numpy appends ".npz" to a path that lacks it.
    with open(path, "wb") as file:
        (np.savez_compressed if compressed else np.savez)(file, **arrays)


def write_imagefolder_zip(
    path: FilePath,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str] | None = None,
    root: str | None = "data",
) -> list[str]:
    """A zip of ``[root/]<class>/<index>.png``, class folders named ``classes[label]``.

    Returns the member path of each input sample, in input order. The reader orders samples by
    sorted path and labels them by sorted folder name, so loaded sample ``i`` is input sample
    ``loaded_order(paths)[i]``, and its label may differ when ``classes`` is not sorted.
    """
    labels = np.asarray(labels)
    if labels.min() < 0:
        raise ValueError("an ImageFolder cannot hold negative labels")
    width = len(str(int(labels.max())))  # zero-padded so that folders sort like their labels
    digits = len(str(len(labels)))
    prefix = f"{root}/" if root else ""
    paths = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = classes[label] if classes is not None else f"class_{label:0{width}d}"
            member = f"{prefix}{folder}/{index:0{digits}d}.png"
            archive.writestr(member, encode_png(image))
            paths.append(member)
    return paths


def loaded_order(paths: Sequence[str]) -> np.ndarray:
    """Input index of each loaded sample of an ImageFolder zip written from ``paths``."""
    return np.array(sorted(range(len(paths)), key=lambda index: paths[index]), dtype=np.int64)


def write_parquet(
    path: FilePath,
    images: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str] | None = None,
) -> None:
    """The Hugging Face hub export layout: ``image`` {bytes, path} as PNG, ``label`` int64."""
    encoded = [encode_png(image) for image in images]
    write_hub_parquet(path, encoded, labels, [f"{i:06d}.png" for i in range(len(encoded))], classes)


def write_hub_parquet(
    path: FilePath,
    encoded: Sequence[bytes],
    labels: np.ndarray,
    paths: Sequence[str | None],
    classes: Sequence[str] | None = None,
) -> None:
    """The Hugging Face hub export layout of encoded images: ``image`` a struct {bytes, path}
    (the ``Image`` feature), ``label`` int64 (a ``ClassLabel`` when ``classes`` are given)."""
    image_column = pa.array(
        [{"bytes": data, "path": where} for data, where in zip(encoded, paths, strict=True)],
        type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    label_feature: dict[str, object] = (
        {"_type": "ClassLabel", "names": list(classes)}
        if classes is not None
        else {"_type": "Value", "dtype": "int64"}
    )
    features = {"image": {"_type": "Image"}, "label": label_feature}
    schema = pa.schema(
        [("image", image_column.type), ("label", pa.int64())],
        metadata={"huggingface": json.dumps({"info": {"features": features}})},
    )
    table = pa.table([image_column, pa.array(np.asarray(labels), pa.int64())], schema=schema)
    pq.write_table(table, path)


def write_zip(path: FilePath, members: Mapping[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


# --- images as people have them: of many sizes, modes and formats --------------------------------

EXIF_ORIENTATION = 0x0112
# EXIF orientation 6: the stored pixels are shown turned 90 degrees clockwise.
TURNED_CLOCKWISE = 6


def encode_image(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def tinted(grey: np.ndarray) -> np.ndarray:
    """An H x W x 3 colour image with the grey image's content in every channel, unequally."""
    grey = grey.astype(np.uint16)
    return np.stack([grey, grey * 3 // 4, 255 - grey], axis=-1).astype(np.uint8)


def turned_jpeg(display: np.ndarray) -> bytes:
    """A JPEG whose stored pixels are ``display`` turned a quarter anticlockwise, with the EXIF
    orientation that shows them as ``display``: what a camera held upright writes."""
    stored = Image.fromarray(display).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = TURNED_CLOCKWISE
    return encode_image(stored, "JPEG", quality=95, exif=exif.tobytes())


def _palette_with_transparency(grey: np.ndarray) -> bytes:
    image = Image.fromarray(tinted(grey)).convert("P")
    return encode_image(image, transparency=0)


def _sixteen_bit(grey: np.ndarray) -> bytes:
    return encode_image(Image.fromarray(grey.astype(np.uint16) * 257))  # mode I;16


def _grey_with_alpha(grey: np.ndarray) -> bytes:
    return encode_image(Image.merge("LA", [Image.fromarray(grey), Image.fromarray(255 - grey)]))


def _colour_with_alpha(grey: np.ndarray) -> bytes:
    pixels = np.concatenate([tinted(grey), (255 - grey)[..., None]], axis=-1)
    return encode_image(Image.fromarray(pixels))  # RGBA


# Each encoding of a grey uint8 image: (file extension, bytes).
ENCODINGS: dict[str, Callable[[np.ndarray], tuple[str, bytes]]] = {
    "L": lambda grey: ("png", encode_image(Image.fromarray(grey))),
    "1": lambda grey: ("png", encode_image(Image.fromarray(grey).convert("1"))),
    "I;16": lambda grey: ("png", _sixteen_bit(grey)),
    "LA": lambda grey: ("png", _grey_with_alpha(grey)),
    "RGB": lambda grey: ("png", encode_image(Image.fromarray(tinted(grey)))),
    "RGBA": lambda grey: ("png", _colour_with_alpha(grey)),
    "P": lambda grey: ("png", _palette_with_transparency(grey)),
    "CMYK": lambda grey: (
        "jpg",
        encode_image(Image.fromarray(tinted(grey)).convert("CMYK"), "JPEG"),
    ),
    "turned": lambda grey: ("jpg", turned_jpeg(tinted(grey))),
}
GREY_ENCODINGS = ("L", "1", "I;16", "LA")
# (W, H) of the images ``varied`` makes, in turn.
VARIED_SIZES = ((20, 15), (48, 64), (200, 250))


def varied(
    images: np.ndarray,
    encodings: Sequence[str] = tuple(ENCODINGS),
    sizes: Sequence[tuple[int, int]] = VARIED_SIZES,
) -> list[tuple[str, bytes]]:
    """Each grey uint8 image (H x W) scaled to the next of ``sizes`` and stored in the next of
    ``encodings``: (file extension, bytes) per image."""
    files = []
    for index, grey in enumerate(images):
        size = sizes[index % len(sizes)]
        scaled = np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BILINEAR))
        files.append(ENCODINGS[encodings[index % len(encodings)]](scaled))
    return files


def write_varied_imagefolder_zip(
    path: FilePath, files: Sequence[tuple[str, bytes]], labels: np.ndarray
) -> list[str]:
    """An ImageFolder zip of ``varied`` files, ``data/class_<label>/<index>.<ext>``. Returns the
    member path of each file, in input order (``loaded_order`` maps them to loaded indices)."""
    width = len(str(int(np.max(labels))))
    digits = len(str(len(files)))
    members = {
        f"data/class_{label:0{width}d}/{index:0{digits}d}.{ext}": data
        for index, ((ext, data), label) in enumerate(zip(files, labels, strict=True))
    }
    write_zip(path, members)
    return list(members)
