"""Upload formats: round trips on real Fashion-MNIST images, and refusals of hostile files."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from app.formats import DatasetError, Limits, detect_format, inspect_dataset, load_dataset
from tests.dataset_files import (
    encode_png,
    loaded_order,
    write_imagefolder_zip,
    write_npz,
    write_parquet,
)

FASHION_CLASSES = [
    "T-shirt", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


@pytest.fixture(scope="module")
def fashion(small_fashion) -> tuple[np.ndarray, np.ndarray]:
    """600 real Fashion-MNIST images, 60 per class."""
    return small_fashion


@pytest.fixture(scope="module")
def colour() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (30, 16, 12, 3), dtype=np.uint8), np.arange(30) % 3


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _two_classes(image: np.ndarray | None = None) -> dict[str, bytes]:
    png = encode_png(np.zeros((16, 16), np.uint8) if image is None else image)
    return {"data/a/0.png": png, "data/a/1.png": png, "data/b/0.png": png}


# --- npz -----------------------------------------------------------------------------------------


def test_npz_round_trip_on_fashion_mnist(tmp_path, fashion) -> None:
    images, labels = fashion
    path = tmp_path / "data.bin"  # detected by content, not name
    write_npz(path, images, labels)

    assert detect_format(path) == "npz"
    info = inspect_dataset(path)
    assert (info.format, info.n_samples, info.image_shape) == ("npz", 600, (28, 28))
    assert (info.n_classes, info.classes) == (10, None)
    loaded = load_dataset(path)
    np.testing.assert_array_equal(loaded.images, images)
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.labels.dtype == np.int64
    assert loaded.paths is None


def test_npz_compressed_colour_with_class_names(tmp_path, colour) -> None:
    images, labels = colour
    path = tmp_path / "data.npz"
    write_npz(path, images, labels.astype(np.uint8), classes=["cat", "dog", "eel"], compressed=True)

    info = inspect_dataset(path, "npz")
    assert info.image_shape == (16, 12, 3)
    assert info.classes == ["cat", "dog", "eel"]
    loaded = load_dataset(path, "npz")
    np.testing.assert_array_equal(loaded.images, images)
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.classes == ["cat", "dog", "eel"]


def test_npz_keeps_negative_labels_and_a_channel_axis(tmp_path, fashion) -> None:
    images, labels = fashion
    path = tmp_path / "data.npz"
    write_npz(path, images[..., None], labels - 5)
    assert inspect_dataset(path).image_shape == (28, 28, 1)
    loaded = load_dataset(path)
    assert loaded.images.shape == (600, 28, 28, 1)
    np.testing.assert_array_equal(loaded.labels, (labels - 5).astype(np.int64))


def test_npz_fortran_order_is_read_as_written(tmp_path, colour) -> None:
    images, labels = colour
    path = tmp_path / "data.npz"
    write_npz(path, np.asfortranarray(images), labels)
    np.testing.assert_array_equal(load_dataset(path).images, images)


def test_npz_refuses_object_arrays_without_unpickling(tmp_path, fashion) -> None:
    images, _ = fashion
    path = tmp_path / "pickled.npz"
    np.savez(path, x=images, y=np.array([{"evil": 1}] * len(images), dtype=object))
    with pytest.raises(DatasetError, match="object array"):
        inspect_dataset(path)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((4, 9, 9), np.float32), [0, 1, 0, 1], "uint8 images.*float32"),
        (np.zeros((4, 9, 9), np.uint8), [0, 1, 0], "4 images but 'y' has 3"),
        (np.zeros((4, 9, 9), np.uint8), [1, 1, 1, 1], "at least 2 classes"),
        (np.zeros((4, 9, 9), np.uint8), [[0], [1], [0], [1]], "1-D integer"),
        (np.zeros((4, 9, 9), np.uint8), [0.0, 1.0, 0.0, 1.0], "1-D integer"),
        (np.zeros((4, 9, 9, 2), np.uint8), [0, 1, 0, 1], "C = 1 or 3"),
        (np.zeros((4, 7, 9), np.uint8), [0, 1, 0, 1], "at least 8x8"),
        (np.zeros((0, 9, 9), np.uint8), np.zeros(0, int), "no samples"),
    ],
)
def test_npz_refuses_bad_arrays(tmp_path, x, y, message) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x=x, y=np.asarray(y))
    with pytest.raises(DatasetError, match=message):
        inspect_dataset(path)


def test_npz_refuses_missing_labels_and_uncovered_class_names(tmp_path) -> None:
    x = np.zeros((4, 9, 9), np.uint8)
    np.savez(tmp_path / "no_y.npz", x=x, labels=np.arange(4))
    with pytest.raises(DatasetError, match="missing \\['y'\\]"):
        inspect_dataset(tmp_path / "no_y.npz", "npz")
    write_npz(tmp_path / "names.npz", x, np.array([0, 1, 2, 1]), classes=["a", "b"])
    with pytest.raises(DatasetError, match="label 2 has no class name"):
        inspect_dataset(tmp_path / "names.npz")


def test_npz_refuses_a_truncated_file(tmp_path, fashion) -> None:
    path = tmp_path / "data.npz"
    write_npz(path, *fashion)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        inspect_dataset(path, "npz")


def test_npz_inspection_does_not_read_the_images(tmp_path, fashion) -> None:
    images, labels = fashion
    path = tmp_path / "data.npz"
    write_npz(path, images, labels)  # stored: x's pixels sit in the file as they are
    raw = bytearray(path.read_bytes())
    offset = raw.find(images[300].tobytes())
    assert offset > 0
    raw[offset] ^= 0xFF  # breaks x's CRC, not its header
    path.write_bytes(bytes(raw))
    assert inspect_dataset(path).n_samples == 600
    with pytest.raises(DatasetError, match="'x' is truncated or corrupt: Bad CRC-32"):
        load_dataset(path)


def test_npz_limits_samples_and_image_side(tmp_path, fashion) -> None:
    path = tmp_path / "data.npz"
    write_npz(path, *fashion)
    with pytest.raises(DatasetError, match="at most 500 allowed"):
        inspect_dataset(path, limits=Limits(max_samples=500))
    with pytest.raises(DatasetError, match="at most 20 pixels per side"):
        inspect_dataset(path, limits=Limits(max_image_side=20))


# --- ImageFolder zip -----------------------------------------------------------------------------


def test_imagefolder_round_trip_strips_the_root(tmp_path, fashion) -> None:
    images, labels = fashion
    path = tmp_path / "upload"
    paths = write_imagefolder_zip(path, images, labels, classes=FASHION_CLASSES, root="mydata")

    assert detect_format(path) == "imagefolder"
    info = inspect_dataset(path)
    assert (info.n_samples, info.image_shape, info.n_classes) == (600, (28, 28), 10)
    assert info.classes == sorted(FASHION_CLASSES)  # folders, not the root
    loaded = load_dataset(path)
    order = loaded_order(paths)
    np.testing.assert_array_equal(loaded.images, images[order])
    assert loaded.paths == [paths[i] for i in order]
    assert loaded.paths[0].startswith("mydata/")
    assert loaded.classes is not None
    assert [loaded.classes[label] for label in loaded.labels] == [
        FASHION_CLASSES[labels[i]] for i in order
    ]


def test_imagefolder_colour_without_root(tmp_path, colour) -> None:
    images, labels = colour
    path = tmp_path / "data.zip"
    paths = write_imagefolder_zip(
        path, images, labels, classes=["zebra", "apple", "mango"], root=None
    )
    info = inspect_dataset(path)
    assert info.image_shape == (16, 12, 3)
    assert info.classes == ["apple", "mango", "zebra"]
    loaded = load_dataset(path)
    order = loaded_order(paths)
    np.testing.assert_array_equal(loaded.images, images[order])
    np.testing.assert_array_equal(loaded.labels, np.array([2, 0, 1])[labels[order]])


def test_imagefolder_ignores_os_junk_and_readmes(tmp_path, colour) -> None:
    images, labels = colour
    path = tmp_path / "data.zip"
    write_imagefolder_zip(path, images, labels)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("data/", b"")
        archive.writestr("data/class_0/", b"")
        archive.writestr("data/.DS_Store", b"junk")
        archive.writestr("data/class_1/._00.png", b"junk")
        archive.writestr("__MACOSX/data/class_0/._00.png", b"junk")
        archive.writestr("data/README.md", b"# my data")
    assert inspect_dataset(path).n_samples == 30
    assert load_dataset(path).images.shape == (30, 16, 12, 3)


@pytest.mark.parametrize(
    ("mode", "shape"),
    [("P", (10, 10, 3)), ("RGBA", (10, 10, 3)), ("LA", (10, 10)), ("1", (10, 10))],
)
def test_imagefolder_converts_other_modes(tmp_path, mode, shape) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (10, 10, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(buffer, format="PNG")
    path = _zip(tmp_path / "d.zip", {"a/0.png": buffer.getvalue(), "b/0.PNG": buffer.getvalue()})
    assert inspect_dataset(path).image_shape == shape
    loaded = load_dataset(path)
    assert loaded.images.shape == (2, *shape)
    if mode == "RGBA":
        np.testing.assert_array_equal(loaded.images[0], rgb)


def test_imagefolder_scales_16_bit_grey(tmp_path) -> None:
    wide = np.arange(100, dtype=np.uint16).reshape(10, 10) * 600
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="PNG")
    path = _zip(tmp_path / "d.zip", {"a/0.png": buffer.getvalue(), "b/0.png": buffer.getvalue()})
    np.testing.assert_array_equal(load_dataset(path).images[0], (wide >> 8).astype(np.uint8))


def test_imagefolder_reads_jpeg_and_promotes_grey_among_colour(tmp_path) -> None:
    across, down = np.meshgrid(np.arange(12) * 20, np.arange(16) * 15)
    smooth = np.stack([across, down, np.full((16, 12), 99)], axis=-1)
    jpeg = io.BytesIO()
    Image.fromarray(smooth.astype(np.uint8)).save(jpeg, format="JPEG", quality=95)
    grey = encode_png(np.full((16, 12), 77, np.uint8))
    path = _zip(tmp_path / "d.zip", {"a/0.JPG": jpeg.getvalue(), "b/0.png": grey})
    loaded = load_dataset(path)
    assert loaded.images.shape == (2, 16, 12, 3)
    assert np.abs(loaded.images[0].astype(int) - smooth).mean() < 4  # JPEG is lossy
    assert (loaded.images[1] == 77).all()

    # The order does not matter: one colour image makes every image colour.
    reversed_modes = _zip(tmp_path / "e.zip", {"a/0.png": grey, "b/0.jpeg": jpeg.getvalue()})
    np.testing.assert_array_equal(load_dataset(reversed_modes).images[::-1], loaded.images)


def _symlink() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("data/a/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../evil.png", "outside the archive"),
        ("data/../../evil.png", "outside the archive"),
        ("/etc/evil.png", "absolute path"),
        ("C:/evil.png", "absolute path"),
        (_symlink(), "symbolic link"),
        ("data/a/more.zip", "nested archives"),
        ("data/a/notes.txt", "'data/a/notes.txt' is not an image"),
        ("data/a/deeper/0.png", "'data/a/deeper/0.png' is nested too deep"),
        ("data/c/", "class folder 'c' holds no images"),
        ("data/b/0.png", "appears twice"),
    ],
)
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_imagefolder_refuses_hostile_entries(tmp_path, name, message) -> None:
    path = _zip(tmp_path / "d.zip", _two_classes())
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(name, encode_png(np.zeros((16, 16), np.uint8)))
    with pytest.raises(DatasetError, match=message):
        inspect_dataset(path, "imagefolder")


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({}, "the archive is empty"),
        ({"readme.txt": b"hi"}, "no class folders"),
        ({"0.png": b"", "1.png": b""}, "'0.png' is outside any class folder"),
        ({"data/0.png": b"", "data/1.png": b""}, "one class folder \\('data'\\)"),
        ({"data/a/0.png": b"", "data/a/1.png": b""}, "one class folder \\('a'\\)"),
    ],
)
def test_imagefolder_refuses_layouts_without_classes(tmp_path, members, message) -> None:
    path = _zip(tmp_path / "d.zip", members)
    with pytest.raises(DatasetError, match=message):
        inspect_dataset(path, "imagefolder")


def test_imagefolder_brings_mixed_sizes_to_the_default_size(tmp_path) -> None:
    members = _two_classes()
    members["data/b/1.png"] = encode_png(np.zeros((16, 20), np.uint8))
    path = _zip(tmp_path / "d.zip", members)
    assert inspect_dataset(path).image_shape == (32, 32)  # from every image's header
    assert load_dataset(path).images.shape == (4, 32, 32)


def test_imagefolder_refuses_corrupt_images(tmp_path) -> None:
    members = _two_classes()
    png = encode_png(np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8))
    members["data/b/1.png"] = png[:100] + bytes(len(png) - 100)  # valid header, broken pixels
    path = _zip(tmp_path / "d.zip", members)
    with pytest.raises(DatasetError, match=r"'data/b/1.png' is a corrupt image"):
        load_dataset(path)

    members["data/a/0.png"] = b"not a png at all"
    with pytest.raises(DatasetError, match=r"'data/a/0.png' is not a readable PNG"):
        inspect_dataset(_zip(tmp_path / "e.zip", members))


def test_imagefolder_refuses_a_zip_bomb_without_extracting(tmp_path, monkeypatch) -> None:
    path = _zip(tmp_path / "bomb.zip", _two_classes())
    with (
        zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive,
        archive.open("data/b/bomb.png", "w") as member,
    ):
        for _ in range(32):  # 32 MiB of zeros, written without holding them
            member.write(bytes(2**20))
    assert path.stat().st_size < 2**20

    def no_extraction(*args: object, **kwargs: object) -> None:
        raise AssertionError("the archive was read")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_extraction)
    with pytest.raises(DatasetError, match=r"'data/b/bomb.png' expands .*zip bomb"):
        inspect_dataset(path, "imagefolder")
    with pytest.raises(DatasetError, match=r"bomb.png' is 33554432 bytes uncompressed"):
        load_dataset(path, "imagefolder", limits=Limits(max_member_bytes=2**24))
    total = Limits(max_total_bytes=2**24, max_compression_ratio=2000)
    with pytest.raises(DatasetError, match=r"the archive is .* bytes uncompressed"):
        inspect_dataset(path, "imagefolder", limits=total)


def test_imagefolder_does_not_trust_the_sizes_in_the_directory(tmp_path) -> None:
    path = _zip(tmp_path / "d.zip", _two_classes())
    raw = bytearray(path.read_bytes())
    entry = raw.rfind(b"PK\x01\x02")  # the last member's central directory record
    raw[entry + 24 : entry + 28] = (10).to_bytes(4, "little")  # claims 10 bytes uncompressed
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"'data/b/0.png' is corrupt in the archive"):
        load_dataset(path)


def test_imagefolder_refuses_bzip2_members(tmp_path) -> None:
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_BZIP2) as archive:
        for name, data in _two_classes().items():
            archive.writestr(name, data)
    with pytest.raises(DatasetError, match="only stored and deflate"):
        inspect_dataset(path)


def test_imagefolder_limits_image_side(tmp_path) -> None:
    path = _zip(tmp_path / "d.zip", _two_classes())
    with pytest.raises(DatasetError, match="at most 12 pixels per side"):
        inspect_dataset(path, limits=Limits(max_image_side=12))
    tiny = _zip(tmp_path / "e.zip", _two_classes(np.zeros((4, 4), np.uint8)))
    with pytest.raises(DatasetError, match="at least 8x8"):
        inspect_dataset(tiny)


# --- parquet -------------------------------------------------------------------------------------


def test_parquet_round_trip_with_class_names(tmp_path, fashion) -> None:
    images, labels = fashion
    path = tmp_path / "train-00000-of-00001"
    write_parquet(path, images, labels, classes=FASHION_CLASSES)

    assert detect_format(path) == "parquet"
    info = inspect_dataset(path)
    assert (info.format, info.n_samples, info.image_shape) == ("parquet", 600, (28, 28))
    assert (info.n_classes, info.classes) == (10, FASHION_CLASSES)
    loaded = load_dataset(path)
    np.testing.assert_array_equal(loaded.images, images)
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.classes == FASHION_CLASSES


def test_parquet_colour_in_small_row_groups(tmp_path, colour) -> None:
    images, labels = colour
    path = tmp_path / "d.parquet"
    write_parquet(path, images, labels)
    pq.write_table(pq.read_table(path), path, row_group_size=7)  # batches cross row groups
    assert inspect_dataset(path).classes is None
    loaded = load_dataset(path)
    np.testing.assert_array_equal(loaded.images, images)
    np.testing.assert_array_equal(loaded.labels, labels)


def test_parquet_plain_binary_column_and_other_names(tmp_path, colour) -> None:
    images, labels = colour
    table = pa.table(
        {
            "id": pa.array(np.arange(30), pa.int64()),
            "img": pa.array([encode_png(image) for image in images], pa.binary()),
            "fine_label": pa.array(labels, pa.int16()),
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    loaded = load_dataset(tmp_path / "d.parquet")
    np.testing.assert_array_equal(loaded.images, images)
    np.testing.assert_array_equal(loaded.labels, labels)


def _parquet(
    path: Path, columns: dict[str, pa.Array], metadata: dict[str, str] | None = None
) -> Path:
    table = pa.table(columns)
    pq.write_table(table.replace_schema_metadata(metadata), path)
    return path


def _png_column(n: int) -> pa.Array:
    return pa.array([encode_png(np.zeros((9, 9), np.uint8))] * n, pa.binary())


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"image": _png_column(4)}, "no label column"),
        ({"image": _png_column(4), "label": pa.array(list("abab"))}, "'label' has type string"),
        ({"image": pa.array([1, 2, 3, 4]), "label": pa.array([0, 1, 0, 1])}, "'image' has type"),
        ({"label": pa.array([0, 1, 0, 1])}, "no image column"),
        ({"image": _png_column(4), "label": pa.array([0, 1, None, 1])}, "1 missing labels"),
        ({"image": _png_column(4), "label": pa.array([1, 1, 1, 1])}, "at least 2 classes"),
    ],
)
def test_parquet_refuses_missing_or_mistyped_columns(tmp_path, columns, message) -> None:
    path = _parquet(tmp_path / "d.parquet", columns)
    with pytest.raises(DatasetError, match=message):
        inspect_dataset(path)


def test_parquet_refuses_rows_without_image_bytes(tmp_path) -> None:
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    png = encode_png(np.zeros((9, 9), np.uint8))
    rows = [{"bytes": png, "path": "a.png"}, {"bytes": None, "path": "b.png"}, None]
    labels = pa.array([0, 1, 0])
    path = _parquet(
        tmp_path / "d.parquet", {"image": pa.array(rows[:2], kind), "label": labels[:2]}
    )
    with pytest.raises(DatasetError, match=r"row 1 has no image bytes \(only a path, 'b.png'\)"):
        load_dataset(path)
    path = _parquet(tmp_path / "e.parquet", {"image": pa.array([png, None, png]), "label": labels})
    with pytest.raises(DatasetError, match="row 1 has no image bytes"):
        load_dataset(path)


def test_parquet_refuses_labels_outside_the_class_names(tmp_path, colour) -> None:
    images, labels = colour
    path = tmp_path / "d.parquet"
    write_parquet(path, images, labels, classes=["a", "b"])
    with pytest.raises(DatasetError, match="label 2 has no class name"):
        inspect_dataset(path)


def test_parquet_ignores_metadata_it_cannot_use(tmp_path) -> None:
    metadata = {"huggingface": json.dumps({"info": {"features": {"label": "nonsense"}}})}
    columns = {"image": _png_column(4), "label": pa.array([0, 1, 0, 1])}
    assert inspect_dataset(_parquet(tmp_path / "d.parquet", columns, metadata)).classes is None


def test_parquet_refuses_corrupt_files(tmp_path, colour) -> None:
    path = tmp_path / "d.parquet"
    write_parquet(path, *colour)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="not a readable parquet file"):
        inspect_dataset(path)
    path.write_bytes(b"PAR1" + bytes(200) + b"PAR1")
    with pytest.raises(DatasetError, match="not a readable parquet file"):
        inspect_dataset(path)


# --- detection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8)), "none of these"),
        (b"", "the file is empty"),
        (b"\x1f\x8b\x08\x00rest", "got a gzip file"),
    ],
)
def test_detect_format_refuses_other_files(tmp_path, content, message) -> None:
    path = tmp_path / "upload"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=f"unrecognized dataset file.*{message}.*accepted"):
        detect_format(path)
    with pytest.raises(DatasetError, match="unrecognized"):
        load_dataset(path)


def test_a_file_of_another_format_is_refused_with_a_reason(tmp_path, colour) -> None:
    path = tmp_path / "d.parquet"
    write_parquet(path, *colour)
    with pytest.raises(DatasetError, match="not a readable zip archive"):
        inspect_dataset(path, "npz")
    with pytest.raises(DatasetError, match="unknown format 'csv'"):
        inspect_dataset(path, "csv")  # type: ignore[arg-type]


def test_the_formats_stay_torch_free() -> None:
    """The API process imports this package; torch would make it slow to start and large."""
    check = "import sys, app.formats; print(sorted({'torch', 'incompat'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
