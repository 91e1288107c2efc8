"""``.parquet`` uploads in the Hugging Face hub export layout.

An image column (the HF ``Image`` feature, a struct ``{bytes, path}``, or plain binary) of PNG/JPEG
bytes and an integer label column; class names come from the HF ``ClassLabel`` metadata if present,
and each image's ``path`` (where a struct has one) is kept for the flagged list.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.formats.base import (
    DatasetError,
    DatasetInfo,
    Limits,
    LoadedDataset,
    as_int64_labels,
    check_class_names,
    check_labels,
    check_sample_count,
)
from app.formats.images import Named, decode_all, survey

IMAGE_COLUMNS = ("image", "img", "pixel_values", "images")
LABEL_COLUMNS = ("label", "labels", "fine_label", "target")
_BATCH_ROWS = 256
_READ_BUFFER = 2**20  # stream pages rather than reading whole column chunks into memory
_ARROW_ERRORS = (pa.ArrowException, OSError, EOFError)
MAX_PATH = 1024  # characters of an image's path kept for the flagged list


def inspect(path: str | os.PathLike[str], limits: Limits, image_size: int | None) -> DatasetInfo:
    """Reads every image's header (size, mode, PNG checksums), as for an ImageFolder zip."""
    with _open(path) as file:
        n, image_column, labels, classes = _parse(file, limits)
        n_classes = check_labels(labels, classes)
        rows = _rows(file, image_column, n, limits)
        plan = survey(n, rows, limits, image_size, verify=True)
    return DatasetInfo(
        format="parquet", n_samples=n, image_shape=plan.shape, n_classes=n_classes, classes=classes
    )


def load(path: str | os.PathLike[str], limits: Limits, image_size: int | None) -> LoadedDataset:
    with _open(path) as file:
        n, image_column, labels, classes = _parse(file, limits)
        check_labels(labels, classes)
        images = decode_all(n, lambda: _rows(file, image_column, n, limits), limits, image_size)
        paths = _paths(file, image_column, n)
    return LoadedDataset(images=images, labels=labels, classes=classes, paths=paths)


@contextmanager
def _open(path: str | os.PathLike[str]) -> Iterator[Any]:
    # Opened here so that a missing file stays an OSError (the caller's bug, not the upload's).
    with open(path, "rb") as handle:
        try:
            file = pq.ParquetFile(handle, buffer_size=_READ_BUFFER)
        except _ARROW_ERRORS as exc:
            raise DatasetError(
                f"not a readable parquet file (truncated or corrupt?): {exc}"
            ) from exc
        with file:
            yield file


def _parse(file: Any, limits: Limits) -> tuple[int, str, npt.NDArray[np.int64], list[str] | None]:
    """Row count, image column, labels and class names: everything but the images."""
    n = int(file.metadata.num_rows)
    check_sample_count(n, limits)
    schema = file.schema_arrow
    repeated = sorted({name for name in schema.names if schema.names.count(name) > 1})
    if repeated:
        raise DatasetError(f"column {repeated[0]!r} appears more than once; names must be unique")
    image_column = _image_column(schema)
    label_column = _label_column(schema)
    try:
        column = file.read(columns=[label_column]).column(0)
    except _ARROW_ERRORS as exc:
        raise DatasetError(f"cannot read column '{label_column}': {exc}") from exc
    if column.null_count:
        first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DatasetError(
            f"column '{label_column}' has {column.null_count} missing labels (first in row {first})"
        )
    # The metadata's row count sizes the image array; a column that disagrees is corruption.
    if len(column) != n:
        raise DatasetError(
            f"the file's metadata promises {n} rows but column '{label_column}' holds {len(column)}"
        )
    labels = as_int64_labels(column.to_numpy(), f"column '{label_column}'")
    return n, image_column, labels, _class_names(schema, label_column)


def _is_binary(kind: Any) -> bool:
    return bool(pa.types.is_binary(kind) or pa.types.is_large_binary(kind))


def _is_image_type(kind: Any) -> bool:
    """Binary, or a struct with a binary ``bytes`` field (a Hugging Face Image feature)."""
    if pa.types.is_struct(kind):
        index = kind.get_field_index("bytes")
        return index >= 0 and _is_binary(kind.field(index).type)
    return _is_binary(kind)


def _columns(schema: Any) -> str:
    return ", ".join(f"{field.name} ({field.type})" for field in schema)


def _image_column(schema: Any) -> str:
    for name in IMAGE_COLUMNS:
        if name in schema.names:
            kind = schema.field(name).type
            if not _is_image_type(kind):
                raise DatasetError(
                    f"column '{name}' has type {kind}; images must be a struct {{bytes, path}} "
                    "(a Hugging Face Image feature) or binary PNG/JPEG bytes"
                )
            return name
    found = [field.name for field in schema if _is_image_type(field.type)]
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise DatasetError(
            "no image column: expected a column 'image' of PNG/JPEG bytes "
            f"(a Hugging Face Image feature); columns are {_columns(schema)}"
        )
    raise DatasetError(f"several columns could hold the images ({found}); name one 'image'")


def _label_column(schema: Any) -> str:
    for name in LABEL_COLUMNS:
        if name in schema.names:
            kind = schema.field(name).type
            # No fallback to another integer column: that could be an id, silently wrong labels.
            if not pa.types.is_integer(kind):
                raise DatasetError(f"column '{name}' has type {kind}; labels must be integers")
            return name
    found = [field.name for field in schema if pa.types.is_integer(field.type)]
    if len(found) == 1:
        return str(found[0])
    raise DatasetError(
        f"no label column: expected an integer column named one of {list(LABEL_COLUMNS)}; "
        f"columns are {_columns(schema)}"
    )


def _class_names(schema: Any, label_column: str) -> list[str] | None:
    """Names from the HF ``ClassLabel`` feature; metadata that says otherwise is ignored."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return None
    try:
        feature = json.loads(raw)["info"]["features"][label_column]
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: "[[[[..."
        return None
    if not isinstance(feature, dict) or feature.get("_type") != "ClassLabel":
        return None
    names = feature.get("names")
    if not isinstance(names, list):
        return None
    return check_class_names([str(name) for name in names], "the ClassLabel names")


def _rows(file: Any, column: str, n: int, limits: Limits) -> Iterator[Named]:
    """Each row's encoded image, in row order, named for messages; exactly ``n`` of them."""
    row = 0
    try:
        for batch in file.iter_batches(batch_size=_BATCH_ROWS, columns=[column]):
            for value in batch.column(0).to_pylist():
                if row == n:
                    raise DatasetError(
                        f"the file's metadata promises {n} rows but its image column holds more"
                    )
                yield f"row {row}", _encoded(value, row, limits)
                row += 1
    except _ARROW_ERRORS as exc:
        raise DatasetError(f"the parquet file is corrupt near row {row}: {exc}") from exc
    if row != n:
        raise DatasetError(
            f"the file's metadata promises {n} rows but its image column holds {row}"
        )


def _paths(file: Any, column: str, n: int) -> list[str | None] | None:
    """The path each row's image carries (a Hugging Face Image feature keeps the name of the file
    it was made from), for the flagged list; None when no row carries a usable one. Only the
    struct's ``path`` field is read, not the images again."""
    kind = file.schema_arrow.field(column).type
    index = kind.get_field_index("path") if pa.types.is_struct(kind) else -1
    if index < 0 or not pa.types.is_string(kind.field(index).type):
        return None
    try:
        table = file.read(columns=[f"{column}.path"])
        values = pc.struct_field(table.column(column), "path").to_pylist()
    except _ARROW_ERRORS as exc:
        raise DatasetError(f"cannot read the image paths of column '{column}': {exc}") from exc
    if len(values) != n:
        raise DatasetError(
            f"the file's metadata promises {n} rows but the image paths number {len(values)}"
        )
    paths = [_usable_path(value) for value in values]
    return paths if any(path is not None for path in paths) else None


def _usable_path(value: Any) -> str | None:
    # A path is only shown: one that a page or a database cannot hold (a NUL, a control
    # character), or longer than any file's, is left out rather than refused.
    if isinstance(value, str) and value and len(value) <= MAX_PATH and value.isprintable():
        return value
    return None


def _encoded(value: Any, row: int, limits: Limits) -> bytes:
    data = value.get("bytes") if isinstance(value, dict) else value
    if data is None:
        path = value.get("path") if isinstance(value, dict) else None
        where = f" (only a path, '{path}')" if path else ""
        raise DatasetError(f"row {row} has no image bytes{where}; images must be embedded")
    if len(data) > limits.max_member_bytes:
        raise DatasetError(
            f"the image in row {row} is {len(data)} bytes; "
            f"at most {limits.max_member_bytes} allowed"
        )
    return bytes(data)
