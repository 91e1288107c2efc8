"""Property tests of the loaders (``inspect_dataset`` and ``load_dataset``) on every format.

1. Hostile bytes (arbitrary, or valid files mutated: bytes flipped, cut, spliced, and arrays,
   images or names broken inside a well-formed container) raise ``DatasetError`` and nothing
   else, within seconds; and where inspection accepts a file and the load does too, they agree.
2. Valid generated datasets round-trip exactly.

Bounded by the ``loaders-ci`` profile (what ``.ci/run`` runs: the same examples every time);
``LOADERS_PROFILE=loaders-thorough`` for a long hunt with fresh random examples. Hypothesis keeps
the failures it finds in ``.hypothesis/`` and replays them first; what a hunt finds belongs in
``test_hostile.py``'s corpus as a fixed case.
"""

from __future__ import annotations

import io
import json
import os
import signal
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.formats import DatasetError, Limits, inspect_dataset, load_dataset
from tests.dataset_files import (
    encode_png,
    loaded_order,
    write_imagefolder_zip,
    write_npz,
    write_parquet,
)

settings.register_profile(
    "loaders-ci",
    max_examples=30,
    derandomize=True,  # the same examples on every run: a CI result does not depend on luck
    deadline=None,  # the first example pays for imports; `within` bounds each read instead
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "loaders-thorough", settings.get_profile("loaders-ci"), max_examples=2000, derandomize=False
)
PROFILE = settings.get_profile(os.environ.get("LOADERS_PROFILE", "loaders-ci"))

# Small enough that a mutated header cannot make a test allocate much; the checks are the same.
LIMITS = Limits(max_samples=1000, max_image_side=256, max_member_bytes=2**22, max_total_bytes=2**26)
FORMATS = [None, "npz", "imagefolder", "parquet"]  # None: detected from the content
SECONDS = 10  # per read: far above what these small files take, far below a hang


class Hung(BaseException):
    """A BaseException, so that no loader's ``except`` clause can swallow it."""


@contextmanager
def within(seconds: float) -> Iterator[None]:
    def hung(_signum: int, _frame: FrameType | None) -> None:
        raise Hung(f"a read took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def upload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One path that every example overwrites (hypothesis re-runs a test, not its fixtures)."""
    return tmp_path_factory.mktemp("properties") / "upload"


def assert_only_dataset_errors(path: Path, content: bytes, fmt: str | None) -> None:
    path.write_bytes(content)
    info = read_or_refuse(inspect_dataset, path, fmt)
    # Inspection may leave some damage to the load (an npz's pixels behind their CRC).
    loaded = read_or_refuse(load_dataset, path, fmt) if info is not None else None
    if info is None or loaded is None:
        return
    # What inspection promised at upload is what the worker gets.
    assert loaded.images.shape == (info.n_samples, *info.image_shape)
    assert loaded.images.dtype == np.uint8
    assert loaded.labels.shape == (info.n_samples,)
    assert np.unique(loaded.labels).size == info.n_classes
    assert loaded.classes == info.classes


def read_or_refuse(read: Any, path: Path, fmt: str | None) -> Any:
    """What ``read`` returns, or None where it refuses the file with a DatasetError: any other
    exception, or a read that hangs, fails the test."""
    try:
        with within(SECONDS):
            return read(path, fmt, limits=LIMITS)
    except DatasetError as exc:
        message = str(exc)
    assert message  # a person reads it
    return None


# --- valid bases, built once -------------------------------------------------------------------

RNG = np.random.default_rng(0)
N, SIDE = 8, 10
IMAGES = RNG.integers(0, 256, (N, SIDE, SIDE), dtype=np.uint8)
LABELS = np.arange(N) % 2


def _file(write: Any, *args: Any, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    write(buffer, *args, **kwargs)
    return buffer.getvalue()


def _npz(**arrays: Any) -> bytes:
    return _file(np.savez, **arrays)


def _npy(array: np.ndarray) -> bytes:
    return _file(np.save, array, allow_pickle=False)


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


FOLDER = {f"data/{'ab'[label]}/{i}.png": encode_png(IMAGES[i]) for i, label in enumerate(LABELS)}
NPY = {"x.npy": _npy(IMAGES), "y.npy": _npy(LABELS), "classes.npy": _npy(np.array(["a", "b"]))}
HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _parquet(columns: dict[str, pa.Array], metadata: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns).replace_schema_metadata(metadata), buffer, row_group_size=3)
    return buffer.getvalue()


def _hf_parquet(images: list[bytes], labels: Any) -> bytes:
    column = pa.array([{"bytes": data, "path": f"{i}.png"} for i, data in enumerate(images)])
    features = {"image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": ["a", "b"]}}
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    return _parquet({"image": column.cast(HF_IMAGE), "label": labels}, metadata)


BASES = {
    "npz": _zip(NPY),
    "npz-deflated": _zip(NPY, zipfile.ZIP_DEFLATED),
    "imagefolder": _zip(FOLDER),
    "imagefolder-deflated": _zip(FOLDER, zipfile.ZIP_DEFLATED),
    "parquet": _hf_parquet([encode_png(image) for image in IMAGES], pa.array(LABELS)),
}


# --- hostile bytes -------------------------------------------------------------------------------


@st.composite
def positions(draw: st.DrawFn, size: int) -> int:
    """Anywhere, but often near either end, where the headers and directories are."""
    last = size - 1
    return draw(
        st.one_of(
            st.integers(0, last),
            st.integers(0, min(last, 96)),
            st.integers(max(0, last - 256), last),
        )
    )


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    content = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        if not content:
            break
        at = draw(positions(len(content)))
        kind = draw(st.sampled_from(["flip", "cut", "splice", "zero", "delete"]))
        if kind == "flip":
            content[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del content[at:]
        elif kind == "splice":
            content[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "zero":
            content[at : at + 8] = bytes(len(content[at : at + 8]))
        else:
            del content[at : at + draw(st.integers(1, 64))]
    return bytes(content)


MAGIC = [b"", b"PK\x03\x04", b"PK\x05\x06", b"PAR1", b"\x93NUMPY", b"\x89PNG\r\n\x1a\n"]


@PROFILE
@given(
    content=st.builds(lambda magic, rest: magic + rest, st.sampled_from(MAGIC), st.binary()),
    fmt=st.sampled_from(FORMATS),
)
def test_arbitrary_bytes_raise_only_dataset_errors(
    upload: Path, content: bytes, fmt: str | None
) -> None:
    assert_only_dataset_errors(upload, content, fmt)


@PROFILE
@given(data=st.data(), base=st.sampled_from(sorted(BASES)), fmt=st.sampled_from(FORMATS))
def test_mutated_files_raise_only_dataset_errors(
    upload: Path, data: st.DataObject, base: str, fmt: str | None
) -> None:
    assert_only_dataset_errors(upload, data.draw(mutated(BASES[base])), fmt)


DTYPES = ["|u1", "<u2", "<i8", ">i4", "<u8", "<f4", "<c8", "|b1", "<U3", "|S2", "|V4", "|O"]
SIDES = st.one_of(st.integers(-2, 40), st.sampled_from([2**31, 2**62, 10**30]))


@st.composite
def npy_members(draw: st.DrawFn) -> bytes:
    """An .npy whose header says anything plausible (or not), followed by some bytes."""
    buffer = io.BytesIO()
    header = {
        "descr": draw(st.sampled_from(DTYPES)),
        "fortran_order": draw(st.booleans()),
        "shape": tuple(draw(st.lists(SIDES, max_size=5))),
    }
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + draw(st.binary(max_size=2048))


@PROFILE
@given(
    data=st.data(),
    broken=st.lists(st.sampled_from(sorted(NPY)), min_size=1, max_size=3, unique=True),
)
def test_broken_arrays_in_a_sound_npz_raise_only_dataset_errors(
    upload: Path, data: st.DataObject, broken: list[str]
) -> None:
    members = dict(NPY)
    for name in broken:
        members[name] = data.draw(st.one_of(npy_members(), mutated(NPY[name])), label=name)
    assert_only_dataset_errors(upload, _zip(members), "npz")


NAMES = st.lists(st.sampled_from(["data", "a", "b", "..", ".", "", "__MACOSX", ".x", "c.zip"]))


@PROFILE
@given(
    data=st.data(),
    broken=st.lists(st.sampled_from(sorted(FOLDER)), min_size=1, max_size=3, unique=True),
    extra=st.dictionaries(
        st.builds(
            lambda parts, ext: "/".join(parts) + ext, NAMES, st.sampled_from(["", ".png"])
        ).filter(bool),
        st.binary(max_size=64),
        max_size=3,
    ),
)
def test_broken_images_and_names_in_a_sound_zip_raise_only_dataset_errors(
    upload: Path, data: st.DataObject, broken: list[str], extra: dict[str, bytes]
) -> None:
    members = dict(FOLDER)
    for name in broken:
        members[name] = data.draw(mutated(FOLDER[name]), label=name)
    assert_only_dataset_errors(upload, _zip({**members, **extra}), None)


COLUMN_TYPES = {
    "int64": pa.int64(),
    "uint64": pa.uint64(),
    "int8": pa.int8(),
    "float": pa.float32(),
    "string": pa.string(),
    "binary": pa.binary(),
    "struct": HF_IMAGE,
}


@st.composite
def columns(draw: st.DrawFn) -> dict[str, pa.Array]:
    """A few columns named like images or labels (or not), of any of a few types, with nulls."""
    n = draw(st.integers(0, 6))
    names = st.sampled_from(["image", "label", "img", "target", "pixel_values", "x"])
    result: dict[str, pa.Array] = {}
    for name in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
        kind = COLUMN_TYPES[draw(st.sampled_from(sorted(COLUMN_TYPES)))]
        result[name] = pa.array(draw(st.lists(_values(kind), min_size=n, max_size=n)), kind)
    return result


def _values(kind: pa.DataType) -> st.SearchStrategy[Any]:
    if pa.types.is_struct(kind):
        image = st.one_of(st.sampled_from(list(FOLDER.values())), st.binary(max_size=32))
        return st.none() | st.fixed_dictionaries({"bytes": st.none() | image, "path": st.text()})
    if pa.types.is_binary(kind):
        return st.none() | st.sampled_from(list(FOLDER.values())) | st.binary(max_size=32)
    if pa.types.is_string(kind):
        return st.none() | st.text(max_size=8)
    if pa.types.is_floating(kind):
        return st.none() | st.floats(width=32)
    info = np.iinfo(kind.to_pandas_dtype())
    return st.none() | st.integers(int(info.min), int(info.max))


@PROFILE
@given(
    table=columns(),
    metadata=st.one_of(
        st.none(),
        st.builds(lambda text: {"huggingface": text}, st.text(max_size=64)),
        st.builds(
            lambda names: {
                "huggingface": json.dumps(
                    {"info": {"features": {"label": {"_type": "ClassLabel", "names": names}}}}
                )
            },
            st.lists(st.text(max_size=4), max_size=3),
        ),
    ),
)
def test_odd_parquet_tables_raise_only_dataset_errors(
    upload: Path, table: dict[str, pa.Array], metadata: dict[str, str] | None
) -> None:
    assert_only_dataset_errors(upload, _parquet(table, metadata), "parquet")


# --- round trips --------------------------------------------------------------------------------


@st.composite
def datasets(draw: st.DrawFn, channels: tuple[int | None, ...] = (None, 1, 3)) -> Any:
    """Small uint8 images (N x H x W, or x C) and labels of at least two distinct values."""
    n = draw(st.integers(2, 10))
    height, width = draw(st.integers(8, 20)), draw(st.integers(8, 20))
    channel = draw(st.sampled_from(channels))
    shape = (n, height, width) if channel is None else (n, height, width, channel)
    seed = draw(st.integers(0, 2**32 - 1))
    images = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    k = draw(st.integers(2, 4))
    labels = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    labels[:2] = [0, 1]  # at least two classes
    return images, labels, k


@settings(PROFILE, max_examples=max(10, PROFILE.max_examples // 2))
@given(
    dataset=datasets(),
    dtype=st.sampled_from(["int8", "uint8", "int32", "uint64", "int64"]),
    named=st.booleans(),
    compressed=st.booleans(),
)
def test_npz_round_trips(
    upload: Path, dataset: Any, dtype: str, named: bool, compressed: bool
) -> None:
    images, labels, k = dataset
    classes = [f"class {i}" for i in range(k)] if named else None
    write_npz(upload, images, labels.astype(dtype), classes=classes, compressed=compressed)
    info = inspect_dataset(upload, limits=LIMITS)
    assert (info.format, info.n_samples, info.image_shape) == (
        "npz",
        *images.shape[:1],
        images.shape[1:],
    )
    loaded = load_dataset(upload, limits=LIMITS)
    np.testing.assert_array_equal(loaded.images, images)
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.labels.dtype == np.int64
    assert loaded.classes == info.classes == classes


def _decoded(images: np.ndarray) -> np.ndarray:
    """What a PNG of each image decodes to: an H x W x 1 image is stored as grayscale."""
    return images[..., 0] if images.ndim == 4 and images.shape[-1] == 1 else images


@settings(PROFILE, max_examples=max(10, PROFILE.max_examples // 2))
@given(dataset=datasets(), root=st.sampled_from([None, "data"]))
def test_imagefolder_round_trips_the_decoded_pixels(
    upload: Path, dataset: Any, root: str | None
) -> None:
    images, labels, _ = dataset
    paths = write_imagefolder_zip(upload, images, labels, root=root)
    order = loaded_order(paths)
    present = np.unique(labels)  # folders exist for the labels present, in sorted order
    info = inspect_dataset(upload, limits=LIMITS)
    assert (info.format, info.n_samples, info.n_classes) == (
        "imagefolder",
        len(labels),
        present.size,
    )
    loaded = load_dataset(upload, limits=LIMITS)
    np.testing.assert_array_equal(loaded.images, _decoded(images)[order])
    np.testing.assert_array_equal(loaded.labels, np.searchsorted(present, labels[order]))
    assert loaded.paths == [paths[i] for i in order]


@settings(PROFILE, max_examples=max(10, PROFILE.max_examples // 2))
@given(dataset=datasets())
def test_parquet_round_trips_the_decoded_pixels(upload: Path, dataset: Any) -> None:
    images, labels, k = dataset
    write_parquet(upload, images, labels, classes=[f"c{i}" for i in range(k)])
    info = inspect_dataset(upload, limits=LIMITS)
    assert (info.format, info.n_samples) == ("parquet", len(labels))
    loaded = load_dataset(upload, limits=LIMITS)
    np.testing.assert_array_equal(loaded.images, _decoded(images))
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.classes == [f"c{i}" for i in range(k)]


def _spin(seconds: float) -> None:
    with within(seconds):
        while True:
            Image.new("L", (8, 8))


def test_the_hang_guard_fires() -> None:
    with pytest.raises(Hung):
        _spin(0.05)


# --- what these properties found, kept as plain examples -----------------------------------------


def _npy_header_cut_in_a_bracket() -> bytes:
    """numpy's fallback parser for Python 2 headers raised tokenize.TokenError."""
    header = b"{'descr': '<U1', 'fortran_order': False, 'shape': (2,), }"
    header = header.replace(b"{", b"z", 1).ljust(117) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(8)
    return _zip({**NPY, "classes.npy": npy})


def _zip_entry_without_a_name() -> bytes:
    """zipfile ends a name at a NUL: an empty name, on which ZipInfo.is_dir() raised."""
    return _zip(FOLDER).replace(b"data/a/0.png", b"\x00ata/a/0.png")


def _file_named_like_the_root() -> bytes:
    return _zip({**FOLDER, "data": b"a file where the root folder is"})


def _struct_without_a_path() -> bytes:
    kind = pa.struct([("bytes", pa.binary())])
    images = pa.array([{"bytes": None}] * N, kind)
    return _parquet({"image": images, "label": pa.array(LABELS)})


def _metadata_nested_too_deep() -> bytes:
    column = pa.array(list(FOLDER.values()), pa.binary())
    return _parquet({"image": column, "label": pa.array(LABELS)}, {"huggingface": "[" * 100_000})


@pytest.mark.parametrize(
    "build",
    [
        _npy_header_cut_in_a_bracket,
        _zip_entry_without_a_name,
        _file_named_like_the_root,
        _struct_without_a_path,
        _metadata_nested_too_deep,
    ],
)
def test_found_cases_raise_only_dataset_errors(upload: Path, build: Any) -> None:
    assert_only_dataset_errors(upload, build(), None)
