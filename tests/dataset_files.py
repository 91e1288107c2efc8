"""Writers of dataset files in each upload format, for tests and benchmarks (no pytest here)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Sequence
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
    image_column = pa.array(
        [{"bytes": encode_png(image), "path": f"{i:06d}.png"} for i, image in enumerate(images)],
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
