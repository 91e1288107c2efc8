"""A corpus of hostile and broken uploads, over HTTP on SQLite and PostgreSQL.

Each row is one upload and the answer it must get: a 4xx whose detail names the problem in words a
person can act on, never a 5xx, and nothing left behind (no audit, no stored file, no spool file).
Every hostile file is a small valid dataset with one thing wrong, and the valid datasets
themselves are accepted (``test_the_valid_bases_are_accepted``), so each refusal is for that thing.
"""

from __future__ import annotations

import io
import itertools
import json
import pickle
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from tests.conftest import empty_tables
from tests.dataset_files import encode_png as png

MAX_UPLOAD = 200_000
MAX_SAMPLES = 100
MAX_SIDE = 64
MAX_PIXELS = 2000  # under MAX_SIDE squared: an image within the side limit can be over it
N = 20  # samples in each valid base dataset
SIDE = 16
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (N, SIDE, SIDE), dtype=np.uint8)
COLOUR = RNG.integers(0, 256, (N, SIDE, SIDE, 3), dtype=np.uint8)
LABELS = np.arange(N) % 2


LIMITS = {
    "max_upload_bytes": MAX_UPLOAD,
    "max_samples": MAX_SAMPLES,
    "max_image_side": MAX_SIDE,
    "max_image_pixels": MAX_PIXELS,
}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """conftest's ``settings`` (both databases) once for the module, for speed, with small limits
    so that going past each takes a small file. Tests check what they add, not that all is empty."""
    data_dir = tmp_path_factory.mktemp("hostile") / "data"
    if request.param == "sqlite":
        settings = Settings(data_dir=data_dir)
        upgrade(settings.resolved_database_url)
    else:
        database_url: str = request.getfixturevalue("postgres_url")
        empty_tables(database_url)
        broker_url: str = request.getfixturevalue("unread_redis_url")
        settings = Settings(data_dir=data_dir, database_url=database_url, broker_url=broker_url)
    return settings.model_copy(update=LIMITS)


@pytest.fixture(scope="module")
def api(limited: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(limited)) as client:
        yield client


@dataclass(frozen=True)
class Leftovers:
    """What an upload could leave behind: audits, stored files, spooled files."""

    audits: int
    stored: list[Path]
    spooled: list[Path]

    @classmethod
    def of(cls, client: TestClient, settings: Settings) -> Leftovers:
        return cls(
            audits=client.get("/audits").json()["total"],
            stored=files_under(settings.data_dir / "storage"),
            spooled=files_under(settings.data_dir / "spool"),
        )


@pytest.fixture
def nothing_left(api: TestClient, limited: Settings) -> Iterator[None]:
    """The test's refusals leave no audit, no stored file and no spool file."""
    before = Leftovers.of(api, limited)
    yield
    assert Leftovers.of(api, limited) == before


def post(client: TestClient, content: bytes, filename: str = "upload.bin", **fields: str) -> Any:
    return client.post(
        "/audits",
        files={"file": (filename, content, "application/octet-stream")},
        data=fields,
    )


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def assert_refused(response: Any, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert words in detail, detail


# --- builders: the valid bases, and each with one thing wrong -----------------------------------


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npz_members(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    """An .npz written member by member, for arrays numpy would not write."""
    return zip_of({f"{name}.npy": data for name, data in members.items()}, compression)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_header(shape: tuple[int, ...], descr: str, data: bytes = b"") -> bytes:
    """An .npy whose header says what we like, followed by ``data``."""
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def image_bytes(mode: str, size: tuple[int, int] = (SIDE, SIDE), fmt: str = "PNG") -> bytes:
    pixels = RNG.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


Member = bytes | tuple[zipfile.ZipInfo, bytes]


def zip_of(members: Mapping[str, Member], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, member in members.items():
            if isinstance(member, tuple):
                archive.writestr(*member)
            else:
                archive.writestr(name, member)
    return buffer.getvalue()


def folder_members() -> dict[str, Member]:
    return {
        f"data/{'ab'[label]}/{index:02d}.png": png(image)
        for index, (image, label) in enumerate(zip(IMAGES, LABELS, strict=True))
    }


def folder() -> bytes:
    return zip_of(folder_members())


def zip_with(name: str, member: Member) -> bytes:
    return zip_of({**folder_members(), name: member})


def symlink(name: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, b"/etc/passwd"


def zeros_member(name: str, size: int) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, bytes(size)


def patch_directory(raw: bytes, name: str, offset: int, value: bytes) -> bytes:
    """``raw`` with a field of ``name``'s central directory record overwritten."""
    record = raw.rfind(name.encode()) - 46  # the record's fixed part precedes the name
    assert raw[record : record + 4] == b"PK\x01\x02"
    return raw[: record + offset] + value + raw[record + offset + len(value) :]


def zip_bomb_one_member() -> bytes:
    return zip_with("data/a/bomb.png", zeros_member("data/a/bomb.png", 4 * 2**20))


def zip_bomb_many_members() -> bytes:
    # Each member under the size below which one member's ratio is not judged; 8 MiB together.
    bombs = {f"data/b/bomb{i}.png": zeros_member(f"data/b/bomb{i}.png", 2**19) for i in range(16)}
    return zip_of({**folder_members(), **bombs})


def zip_bomb_lying_directory() -> bytes:
    """A member that expands to 4 MiB while the directory says 100 bytes: caught while reading."""
    raw = zip_bomb_one_member()
    return patch_directory(raw, "data/a/bomb.png", 24, (100).to_bytes(4, "little"))


def zip_of_many_entries() -> bytes:
    empty = {f"data/{'ab'[i % 2]}/{i:05d}.png": b"" for i in range(2 * MAX_SAMPLES + 1100)}
    return zip_of(empty)


def zip_encrypted() -> bytes:
    raw = folder()
    return patch_directory(raw, "data/a/00.png", 8, (1).to_bytes(2, "little"))


def zip_bzip2() -> bytes:
    return zip_of(folder_members(), zipfile.ZIP_BZIP2)


def truncated_png() -> bytes:
    whole = png(IMAGES[1])
    return whole[: len(whole) // 2]


def damaged_png() -> bytes:
    whole = bytearray(png(IMAGES[1]))
    whole[len(whole) // 2] ^= 0xFF  # inside IDAT: its CRC no longer matches
    return bytes(whole)


def parquet_of(columns: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    table = pa.table(columns)
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(metadata), buffer)
    return buffer.getvalue()


HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def hf_images(images: Iterable[bytes | None]) -> pa.Array:
    return pa.array(
        [{"bytes": data, "path": f"{i}.png"} for i, data in enumerate(images)], HF_IMAGE
    )


def hf_parquet(
    images: Iterable[bytes | None] | None = None,
    labels: Any = LABELS,
    names: list[str] | None = None,
) -> bytes:
    """The Hugging Face export layout; ``names``: a ClassLabel feature with these names."""
    column = hf_images(images if images is not None else [png(image) for image in IMAGES])
    label: dict[str, Any] = {"_type": "ClassLabel", "names": names} if names else {"_type": "Value"}
    features = {"image": {"_type": "Image"}, "label": label}
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    return parquet_of({"image": column, "label": pa.array(labels)}, metadata)


def parquet_images(*changes: tuple[int, bytes | None]) -> bytes:
    images: list[bytes | None] = [png(image) for image in IMAGES]
    for index, data in changes:
        images[index] = data
    return hf_parquet(images)


def corrupt_parquet() -> bytes:
    raw = bytearray(hf_parquet())
    footer = int.from_bytes(raw[-8:-4], "little")
    raw[-8 - footer : -8] = bytes(footer)  # the footer's metadata zeroed, its framing intact
    return bytes(raw)


def half(content: bytes) -> bytes:
    return content[: len(content) // 2]


@dataclass(frozen=True)
class Hostile:
    build: Callable[[], bytes]
    words: str  # part of the detail: what a person reads to fix the file
    status: int = 422


def case(id: str, build: Callable[[], bytes], words: str, status: int = 422) -> Any:
    return pytest.param(Hostile(build, words, status), id=id)


# Each accepted as it is (test_the_valid_bases_are_accepted); the corpus breaks them one way each.
VALID: dict[str, Callable[[], bytes]] = {
    "npz": lambda: npz(x=IMAGES, y=LABELS),
    "npz-colour-with-names": lambda: npz(x=COLOUR, y=LABELS, classes=np.array(["cat", "dog"])),
    "imagefolder": folder,
    "imagefolder-grey-among-colour": lambda: zip_of(
        {"a/0.png": image_bytes("RGB"), "a/1.png": image_bytes("L"), "b/0.png": image_bytes("P")}
    ),
    "imagefolder-colour-among-grey-of-mixed-sizes": lambda: zip_with(
        "data/b/wide.png", image_bytes("RGB", (SIDE, SIDE + 4))
    ),
    "imagefolder-jpeg": lambda: zip_of(
        {"a/0.jpg": image_bytes("RGB", fmt="JPEG"), "b/0.JPEG": image_bytes("RGB", fmt="JPEG")}
    ),
    "parquet": hf_parquet,
    "parquet-with-names": lambda: hf_parquet(names=["cat", "dog"]),
    "parquet-mixed-sizes": lambda: parquet_images((7, png(np.zeros((SIDE, SIDE + 1), np.uint8)))),
}

CORPUS = [
    # --- size limits (MAX_UPLOAD, MAX_SAMPLES, MAX_SIDE) ---
    case("over-upload-limit", lambda: bytes(MAX_UPLOAD + 1), "limit of 200000 bytes", 413),
    case(
        "npz-over-sample-limit",
        lambda: npz(x=np.zeros((MAX_SAMPLES + 1, 8, 8), np.uint8), y=np.arange(MAX_SAMPLES + 1)),
        "101 samples; at most 100 allowed",
    ),
    case(
        "npz-over-side-limit",
        lambda: npz(x=np.zeros((4, 8, MAX_SIDE + 1), np.uint8), y=np.arange(4) % 2),
        "at most 64 pixels per side",
    ),
    case(
        "zip-over-side-limit",
        lambda: zip_with("data/b/big.png", png(np.zeros((8, MAX_SIDE + 1), np.uint8))),
        "at most 64 pixels per side",
    ),
    case(
        "parquet-over-side-limit",
        lambda: parquet_images((0, png(np.zeros((MAX_SIDE + 1, 8), np.uint8)))),
        "at most 64 pixels per side",
    ),
    case(
        "images-under-8-pixels",
        lambda: npz(x=np.zeros((4, 4, 4), np.uint8), y=np.arange(4) % 2),
        "at least 8x8",
    ),
    # --- zip archives ---
    case("zip-bomb-one-member", zip_bomb_one_member, "looks like a zip bomb"),
    case("zip-bomb-many-members", zip_bomb_many_members, "36 members expand 552x"),
    case(
        "zip-bomb-lying-directory", zip_bomb_lying_directory, "bomb.png' is corrupt in the archive"
    ),
    case("zip-too-many-entries", zip_of_many_entries, "lists 1300 entries; at most 1224"),
    case(
        "zip-path-traversal", lambda: zip_with("../evil.png", png(IMAGES[0])), "outside the archive"
    ),
    case(
        "zip-path-traversal-inner",
        lambda: zip_with("data/a/../../../evil.png", png(IMAGES[0])),
        "outside the archive",
    ),
    case("zip-absolute-path", lambda: zip_with("/etc/evil.png", png(IMAGES[0])), "absolute path"),
    case("zip-drive-letter", lambda: zip_with("C:/evil.png", png(IMAGES[0])), "absolute path"),
    case("zip-symlink", lambda: zip_with("data/a/link.png", symlink("data/a/link.png")), "link"),
    case("zip-nested-zip", lambda: zip_with("data/a/more.zip", folder()), "nested archives"),
    case("zip-nested-npz", lambda: zip_with("data/b/x.npz", npz(x=IMAGES, y=LABELS)), "nested"),
    case("zip-non-image-file", lambda: zip_with("data/a/notes.txt", b"hi"), "is not an image"),
    case("zip-text-named-png", lambda: zip_with("data/b/fake.png", b"hello"), "not a readable PNG"),
    case("zip-gif-named-png", lambda: zip_with("data/b/x.png", image_bytes("P", fmt="GIF")), "PNG"),
    case(
        "zip-over-pixel-limit",
        lambda: zip_with("data/b/big.png", png(np.zeros((40, 60), np.uint8))),
        "'data/b/big.png' is 40x60, 2400 pixels; images may have at most 2000 pixels",
    ),
    case(
        "zip-jpeg-over-pixel-limit",
        lambda: zip_with("data/a/big.jpg", image_bytes("RGB", (50, 50), fmt="JPEG")),
        "'data/a/big.jpg' is 50x50, 2500 pixels",
    ),
    case(
        "zip-truncated-png",
        lambda: zip_with("data/b/cut.png", truncated_png()),
        "'data/b/cut.png' is a truncated or corrupt image",
    ),
    case(
        "zip-damaged-png",
        lambda: zip_with("data/b/bad.png", damaged_png()),
        "'data/b/bad.png' is a truncated or corrupt image",
    ),
    case("zip-empty-class-folder", lambda: zip_with("data/c/", b""), "'c' holds no images"),
    case(
        "zip-one-class",
        lambda: zip_of({k: v for k, v in folder_members().items() if "/a/" in k}),
        "an audit needs at least 2 classes",
    ),
    case(
        "zip-class-folder-with-a-newline",
        lambda: zip_with("data/c\nd/0.png", png(IMAGES[0])),
        "the name of class 2 ('c\\nd') holds characters that are not printable",
    ),
    case("zip-image-outside-classes", lambda: zip_with("data/x.png", png(IMAGES[0])), "outside"),
    case("zip-nested-too-deep", lambda: zip_with("data/a/b/0.png", png(IMAGES[0])), "too deep"),
    case("zip-no-class-folders", lambda: zip_of({"README.md": b"# data"}), "no class folders"),
    case("zip-empty", lambda: zip_of({}), "the archive is empty"),
    case("zip-encrypted", zip_encrypted, "encrypted"),
    case("zip-bzip2", zip_bzip2, "only stored and deflate"),
    case("zip-truncated", lambda: half(folder()), "not a readable zip archive"),
    case("not-a-zip", lambda: bytes(RNG.integers(0, 256, 5000, dtype=np.uint8)), "unrecognized"),
    case("gzip-file", lambda: b"\x1f\x8b\x08\x00" + bytes(100), "got a gzip file"),
    case("single-png", lambda: png(IMAGES[0]), "got a single PNG image"),
    # --- npz ---
    case("npz-float-images", lambda: npz(x=IMAGES.astype(np.float32), y=LABELS), "float32"),
    case(
        "npz-float-images-nan-inf",
        lambda: npz(x=np.where(IMAGES > 127, np.inf, np.nan), y=LABELS),
        "uint8 images",
    ),
    case("npz-complex-images", lambda: npz(x=IMAGES.astype(np.complex64), y=LABELS), "complex64"),
    case("npz-int64-images", lambda: npz(x=IMAGES.astype(np.int64), y=LABELS), "uint8 images"),
    case("npz-string-labels", lambda: npz(x=IMAGES, y=LABELS.astype(str)), "1-D integer array"),
    case(
        "npz-float-labels-nan-inf",
        lambda: npz(x=IMAGES, y=np.where(LABELS, np.inf, np.nan)),
        "1-D integer array",
    ),
    case("npz-bool-labels", lambda: npz(x=IMAGES, y=LABELS.astype(bool)), "1-D integer array"),
    case("npz-2d-labels", lambda: npz(x=IMAGES, y=LABELS[:, None]), "1-D integer array"),
    case("npz-length-mismatch", lambda: npz(x=IMAGES, y=LABELS[:-1]), "20 images but 'y' has 19"),
    case("npz-one-label", lambda: npz(x=IMAGES, y=np.zeros(N, int)), "at least 2 classes"),
    case(
        "npz-label-beyond-names",
        lambda: npz(x=IMAGES, y=LABELS * 2, classes=np.array(["a", "b"])),
        "label 2 has no class name",
    ),
    case(
        "npz-negative-label-with-names",
        lambda: npz(x=IMAGES, y=LABELS - 1, classes=np.array(["a", "b"])),
        "label -1 has no class name",
    ),
    case(
        "npz-numeric-class-names",
        lambda: npz(x=IMAGES, y=LABELS, classes=np.arange(2)),
        "'classes' must be a 1-D array of strings",
    ),
    case(
        "npz-class-name-beyond-unicode",
        lambda: npz_members(
            {
                "x": npy(IMAGES),
                "y": npy(LABELS),
                "classes": npy_header((2,), "<U1", np.array([0x61, 0x110000], "<u4").tobytes()),
            }
        ),
        "'classes' holds a code point beyond Unicode",
    ),
    case(
        "npz-class-name-lone-surrogate",
        lambda: npz(x=IMAGES, y=LABELS, classes=np.array(["a", "\ud800"])),
        "the name of class 1 ('\\ud800') holds characters that are not printable",
    ),
    case(
        "npz-class-name-nul",
        lambda: npz(x=IMAGES, y=LABELS, classes=np.array(["a\x00b", "c"])),
        "the name of class 0 ('a\\x00b') holds characters that are not printable",
    ),
    case(
        "npz-class-name-too-long",
        lambda: npz(x=IMAGES, y=LABELS, classes=np.array(["a", "b" * 300])),
        "the name of class 1 is 300 characters long; at most 256 allowed",
    ),
    case("npz-rank-2", lambda: npz(x=IMAGES.reshape(N, -1), y=LABELS), "N x H x W"),
    case("npz-rank-5", lambda: npz(x=IMAGES.reshape(N, 1, 1, SIDE, SIDE), y=LABELS), "N x H x W"),
    case("npz-two-channels", lambda: npz(x=np.zeros((N, 8, 8, 2), np.uint8), y=LABELS), "C = 1"),
    case(
        "npz-zero-samples",
        lambda: npz(x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, int)),
        "holds no samples",
    ),
    case("npz-no-labels", lambda: npz(x=IMAGES, labels=LABELS), "missing ['y']"),
    case("npz-truncated", lambda: half(npz(x=IMAGES, y=LABELS)), "not a readable zip archive"),
    case(
        "npz-header-claims-more-images",
        lambda: npz_members(
            {"x": npy_header((N + 10, SIDE, SIDE), "|u1", IMAGES.tobytes()), "y": npy(LABELS)}
        ),
        "'x' is truncated",
    ),
    case(
        "npz-header-claims-a-terabyte-of-names",
        lambda: npz_members(
            {"x": npy(IMAGES), "y": npy(LABELS), "classes": npy_header((2**40,), "<U8")}
        ),
        "'classes' is truncated",
    ),
    case(
        "npz-negative-shape",
        lambda: npz_members({"x": npy_header((-1, 8, 8), "|u1"), "y": npy(LABELS)}),
        "'x' is corrupt",
    ),
    case(
        "npz-not-npy-inside",
        lambda: npz_members({"x": b"\x93NUMPY garbage", "y": npy(LABELS)}),
        "'x' is not a readable .npy array",
    ),
    case(
        "npz-future-npy-version",
        lambda: npz_members({"x": b"\x93NUMPY\x09\x00" + bytes(100), "y": npy(LABELS)}),
        "'x' is not a readable .npy array",
    ),
    case(
        "npz-bomb-after-the-array",
        lambda: npz_members(
            {"x": npy(IMAGES) + bytes(4 * 2**20), "y": npy(LABELS)}, zipfile.ZIP_DEFLATED
        ),
        "looks like a zip bomb",
    ),
    # --- parquet ---
    case(
        "parquet-no-image-column",
        lambda: parquet_of({"label": pa.array(LABELS)}),
        "no image column",
    ),
    case(
        "parquet-no-label-column",
        lambda: parquet_of({"image": hf_images(png(image) for image in IMAGES)}),
        "no label column",
    ),
    case(
        "parquet-string-labels",
        lambda: hf_parquet(labels=LABELS.astype(str)),
        "labels must be integers",
    ),
    case(
        "parquet-float-labels",
        lambda: hf_parquet(labels=np.where(LABELS, np.inf, np.nan)),
        "labels must be integers",
    ),
    case(
        "parquet-missing-labels",
        lambda: hf_parquet(labels=pa.array([None, *LABELS[1:]], pa.int64())),
        "1 missing labels (first in row 0)",
    ),
    case(
        "parquet-integer-images",
        lambda: parquet_of({"image": pa.array(LABELS), "label": pa.array(LABELS)}),
        "'image' has type int64",
    ),
    case(
        "parquet-image-struct-without-binary",
        lambda: parquet_of(
            {
                "image": pa.array([{"bytes": {"bytes": b"x"}}] * N),
                "label": pa.array(LABELS),
            }
        ),
        "'image' has type struct",
    ),
    case(
        "parquet-duplicate-columns",
        lambda: parquet_of_table(
            pa.Table.from_arrays(
                [hf_images(png(image) for image in IMAGES), pa.array(LABELS), pa.array(LABELS)],
                names=["image", "label", "label"],
            )
        ),
        "'label' appears more than once",
    ),
    case(
        "parquet-row-without-bytes",
        lambda: parquet_images((3, None)),
        "row 3 has no image bytes (only a path, '3.png')",
    ),
    case(
        "parquet-not-an-image",
        lambda: parquet_images((5, b"hello")),
        "'row 5' is not a readable PNG",
    ),
    case(
        "parquet-over-pixel-limit",
        lambda: parquet_images((7, png(np.zeros((40, 60), np.uint8)))),
        "'row 7' is 40x60, 2400 pixels; images may have at most 2000 pixels",
    ),
    case(
        "parquet-truncated-png",
        lambda: parquet_images((9, truncated_png())),
        "'row 9' is a truncated or corrupt image",
    ),
    case(
        "parquet-label-beyond-names",
        lambda: hf_parquet(labels=LABELS * 2, names=["a", "b"]),
        "label 2 has no class name",
    ),
    case(
        "parquet-class-name-lone-surrogate",
        lambda: hf_parquet(names=["a", "\udfff"]),
        "the ClassLabel names: the name of class 1 ('\\udfff') holds characters",
    ),
    case(
        "parquet-class-name-nul",
        lambda: hf_parquet(names=["\x00", "b"]),
        "the name of class 0 ('\\x00') holds characters that are not printable",
    ),
    case("parquet-one-class", lambda: hf_parquet(labels=np.ones(N, int)), "at least 2 classes"),
    case("parquet-corrupt", corrupt_parquet, "not a readable parquet file"),
    case("parquet-truncated", lambda: half(hf_parquet()), "not a readable parquet file"),
    case("parquet-magic-only", lambda: b"PAR1" + bytes(200) + b"PAR1", "not a readable parquet"),
    # --- the file itself ---
    case("empty-file", lambda: b"", "the file is empty"),
]


def parquet_of_table(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("build", VALID.values(), ids=VALID.keys())
def test_the_valid_bases_are_accepted(api: TestClient, build: Callable[[], bytes]) -> None:
    response = post(api, build(), reuse="false")
    assert response.status_code == 202, response.text
    assert response.json()["dataset"]["n_classes"] == 2


def test_grey_among_colour_is_taken_as_colour(api: TestClient) -> None:
    """The documented rule: one colour image makes the dataset colour, grey converts losslessly."""
    audit = post(api, VALID["imagefolder-grey-among-colour"](), reuse="false").json()
    assert audit["dataset"]["image_shape"] == [SIDE, SIDE, 3]
    mixed = VALID["imagefolder-colour-among-grey-of-mixed-sizes"]()
    audit = post(api, mixed, reuse="false").json()
    assert audit["dataset"]["image_shape"] == [32, 32, 3]
    assert audit["image_size"] is None
    audit = post(api, mixed, reuse="false", image_size="24").json()
    assert (audit["dataset"]["image_shape"], audit["image_size"]) == ([24, 24, 3], 24)


@pytest.mark.parametrize("hostile", CORPUS)
@pytest.mark.usefixtures("nothing_left")
def test_hostile_files_are_refused(api: TestClient, hostile: Hostile) -> None:
    response = post(api, hostile.build(), filename="hostile.bin")
    assert_refused(response, hostile.status, hostile.words)
    if hostile.status == 422:  # a dataset refusal names the file it is about
        assert response.json()["detail"].startswith("hostile.bin: ")


# --- pickles -------------------------------------------------------------------------------------


class Marker:
    """Unpickling this creates ``path``: proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def pickled_npz(marker: Path, target: str) -> bytes:
    objects = np.empty(N, dtype=object)
    objects[:] = [Marker(marker)] * N
    return npz(**{"x": IMAGES, "y": LABELS, target: objects})


@pytest.mark.parametrize("target", ["x", "y", "classes"])
@pytest.mark.usefixtures("nothing_left")
def test_pickled_arrays_are_refused_without_unpickling(
    api: TestClient, tmp_path: Path, target: str
) -> None:
    # The payload is live: numpy, allowed to unpickle, creates the marker.
    proof = tmp_path / "proof"
    np.load(io.BytesIO(pickled_npz(proof, target)), allow_pickle=True)[target]
    assert proof.exists()

    marker = tmp_path / "unpickled"
    response = post(api, pickled_npz(marker, target))
    assert_refused(response, 422, f"'{target}' is an object array")
    assert "refused" in response.json()["detail"]
    assert not marker.exists()


@pytest.mark.usefixtures("nothing_left")
def test_a_raw_pickle_in_place_of_an_array_is_not_unpickled(
    api: TestClient, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    content = npz_members({"x": pickle.dumps(Marker(marker)), "y": npy(LABELS)})
    assert_refused(post(api, content), 422, "'x' is not a readable .npy array")
    assert not marker.exists()


# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        pytest.param({"preset": "huge"}, "preset must be one of", id="preset-unknown"),
        pytest.param({"seed": "-1"}, "seed must be an integer from 0", id="seed-negative"),
        pytest.param({"seed": str(2**64)}, "seed must be an integer from 0", id="seed-huge"),
        pytest.param({"seed": "9" * 4000}, "seed must be an integer", id="seed-4000-digits"),
        pytest.param({"seed": "abc"}, "seed must be an integer", id="seed-not-a-number"),
        pytest.param({"seed": "1.5"}, "seed must be an integer", id="seed-fraction"),
        pytest.param({"name": "n" * 201}, "name must be at most 200", id="name-too-long"),
        pytest.param({"name": "a\x00b"}, "'name' contains a NUL", id="name-with-nul"),
        pytest.param({"callback_url": "ftp://x.org/h"}, "http(s) URL", id="callback-ftp"),
        pytest.param({"callback_url": "not a url"}, "http(s) URL", id="callback-not-a-url"),
        pytest.param({"callback_url": "javascript:alert(1)"}, "http(s) URL", id="callback-js"),
        pytest.param({"reuse": "maybe"}, "reuse must be true or false", id="reuse-maybe"),
        pytest.param(
            {"image_size": "7"}, "image_size must be an integer from 8 to 512", id="image-size-7"
        ),
        pytest.param(
            {"image_size": "513"}, "image_size must be an integer from 8", id="image-size-513"
        ),
        pytest.param(
            {"image_size": "-32"}, "image_size must be an integer", id="image-size-negative"
        ),
        pytest.param(
            {"image_size": "32.0"}, "image_size must be an integer", id="image-size-fraction"
        ),
        pytest.param(
            {"image_size": "9" * 4000}, "image_size must be an integer", id="image-size-4000-digits"
        ),
        pytest.param(
            {"preset": "p" * 5000}, "form field 'preset' is too long", id="field-too-long"
        ),
        pytest.param(
            {"seed": "²"},
            "seed must be an integer",
            id="seed-superscript-digit",
        ),
        pytest.param(
            {"callback_url": "http://[::1"},
            "http(s) URL",
            id="callback-broken-ipv6",
        ),
    ],
)
@pytest.mark.usefixtures("nothing_left")
def test_bad_options_are_refused(api: TestClient, fields: dict[str, str], words: str) -> None:
    response = post(api, VALID["npz"](), **fields)
    assert_refused(response, 422, words)


@pytest.mark.usefixtures("nothing_left")
def test_too_many_form_fields_are_refused(api: TestClient) -> None:
    fields = {f"f{i}": "x" for i in range(40)}
    assert_refused(post(api, VALID["npz"](), **fields), 422, "too many form fields")


# --- malformed requests ------------------------------------------------------------------------

BOUNDARY = "hostileboundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, content: bytes, filename: str | None = None, boundary: str = BOUNDARY) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return (
        f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    )


def closing(boundary: str = BOUNDARY) -> bytes:
    return f"--{boundary}--\r\n".encode()


def file_part(content: bytes | None = None) -> bytes:
    return part("file", VALID["npz"]() if content is None else content, "d.npz")


@pytest.mark.parametrize(
    ("content_type", "body", "status", "words"),
    [
        pytest.param("application/json", b'{"file": "x"}', 415, "multipart/form-data", id="json"),
        pytest.param("text/plain", b"hello", 415, "multipart/form-data", id="text-plain"),
        pytest.param(None, b"hello", 415, "multipart/form-data", id="no-content-type"),
        pytest.param("multipart/form-data", file_part(), 415, "multipart", id="no-boundary"),
        pytest.param("multipart/mixed; boundary=x", b"", 415, "multipart/form-data", id="mixed"),
        pytest.param(MULTIPART, b"", 400, "the request body is empty", id="empty-body"),
        pytest.param(
            MULTIPART,
            part("file", b"data", "d.npz", boundary="otherboundary") + closing("otherboundary"),
            400,
            "malformed multipart body",
            id="boundary-mismatch",
        ),
        pytest.param(
            MULTIPART,
            file_part().replace(b"\r\n\r\n", b"\r\n", 1) + closing(),
            400,
            "malformed multipart body",
            id="broken-part-headers",
        ),
        pytest.param(
            MULTIPART, file_part()[:-500], 400, "ended inside the file", id="cut-inside-file"
        ),
        pytest.param(
            MULTIPART,
            file_part() + part("preset", b"tiny"),
            400,
            "ended before its closing boundary",
            id="no-closing-boundary",
        ),
        pytest.param(
            MULTIPART,
            part("file", b"data", "a" * 20_000) + closing(),
            400,
            "Maximum header size exceeded",
            id="huge-part-header-line",
        ),
        pytest.param(
            MULTIPART,
            f"--{BOUNDARY}\r\n".encode()
            + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 4000) for i in range(5))
            + file_part()[len(BOUNDARY) + 4 :]
            + closing(),
            400,
            "headers exceed 16384 bytes",
            id="many-part-header-lines",
        ),
        pytest.param(MULTIPART, closing(), 422, "no file", id="no-parts"),
        pytest.param(
            MULTIPART, part("preset", b"tiny") + closing(), 422, "field 'file'", id="no-file-field"
        ),
        pytest.param(
            MULTIPART,
            part("file", VALID["npz"]()) + closing(),
            422,
            "the field 'file' came without a filename",
            id="file-without-filename",
        ),
        pytest.param(
            MULTIPART,
            part("data", VALID["npz"](), "d.npz") + closing(),
            422,
            "field 'file'",
            id="file-in-another-field",
        ),
        pytest.param(
            MULTIPART,
            file_part() + file_part() + closing(),
            422,
            "one file per audit",
            id="two-files",
        ),
    ],
)
@pytest.mark.usefixtures("nothing_left")
def test_malformed_requests_are_refused(
    api: TestClient,
    content_type: str | None,
    body: bytes,
    status: int,
    words: str,
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = api.post("/audits", content=body, headers=headers)
    assert_refused(response, status, words)


def test_a_file_name_keeps_no_folders_and_no_control_characters(api: TestClient) -> None:
    body = part("file", VALID["npz"](), "..\\..\\evil\x01\x7fname.npz") + part("reuse", b"false")
    body += closing()
    response = api.post("/audits", content=body, headers={"content-type": MULTIPART})
    assert response.status_code == 202, response.text
    assert response.json()["dataset"]["filename"] == "evilname.npz"


# --- streaming: the server stops reading at the limit -------------------------------------------

CHUNK = 2**16


@dataclass
class RawAnswer:
    status: int
    detail: str
    chunks_read: int


def post_raw(
    client: TestClient,
    chunks: Iterator[bytes],
    headers: dict[str, str],
    disconnect_after: int | None = None,
) -> RawAnswer:
    """POST /audits straight through ASGI, counting the body chunks the app asks for (the test
    client would read a whole generator body first); ``disconnect_after`` chunks, the client
    goes away."""
    read = 0
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        if disconnect_after is not None and read == disconnect_after:
            return {"type": "http.disconnect"}
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        read += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/audits",
        "raw_path": b"/audits",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }

    async def request() -> None:
        await client.app(scope, receive, send)

    assert client.portal is not None
    client.portal.call(request)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return RawAnswer(start["status"], json.loads(body)["detail"], read)


def endless_file(prefix: bytes = b"") -> Iterator[bytes]:
    head = prefix + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '.encode()
    yield head + b'filename="d.npz"\r\n\r\n'
    yield from itertools.repeat(bytes(CHUNK))


def endless_ignored_part() -> Iterator[bytes]:
    yield part("junk", b"", "j.bin")[:-2]  # the part's headers, then its endless content
    yield from itertools.repeat(bytes(CHUNK))


# The most chunks a 413 may cost: the file's limit, plus the form fields' allowance, plus one.
MOST_CHUNKS = (MAX_UPLOAD + 32 * 4096 + 65536) // CHUNK + 2


@pytest.mark.parametrize(
    ("chunks", "content_length", "most_chunks"),
    [
        pytest.param(endless_file, None, MOST_CHUNKS, id="endless-file-no-length"),
        pytest.param(endless_file, "1000", MOST_CHUNKS, id="endless-file-lying-length"),
        pytest.param(endless_ignored_part, None, MOST_CHUNKS, id="endless-ignored-part"),
        pytest.param(endless_file, str(10**12), 0, id="huge-length-refused-unread"),
    ],
)
@pytest.mark.usefixtures("nothing_left")
def test_the_server_stops_reading_at_the_limit(
    api: TestClient,
    chunks: Callable[[], Iterator[bytes]],
    content_length: str | None,
    most_chunks: int,
) -> None:
    headers = {"content-type": MULTIPART}
    if content_length is not None:
        headers["content-length"] = content_length
    answer = post_raw(api, chunks(), headers)
    assert answer.status == 413
    assert "limit of 200000 bytes" in answer.detail
    assert answer.chunks_read <= most_chunks


@pytest.mark.usefixtures("nothing_left")
def test_a_client_that_goes_away_mid_upload_leaves_nothing(api: TestClient) -> None:
    content = VALID["npz"]()
    body = file_part(content) + closing()
    pieces = iter([body[i : i + 1024] for i in range(0, len(body), 1024)])
    answer = post_raw(api, pieces, {"content-type": MULTIPART}, disconnect_after=3)
    assert (answer.status, answer.chunks_read) == (400, 3)
    assert "disconnected" in answer.detail


def test_the_limits_do_not_refuse_what_they_allow(api: TestClient) -> None:
    """A file of exactly the upload limit, with the most samples of the widest images, passes."""
    images = RNG.integers(0, 256, (MAX_SAMPLES, 30, MAX_SIDE), dtype=np.uint8)
    buffer = io.BytesIO(npz(x=images, y=np.arange(MAX_SAMPLES) % 2))
    with zipfile.ZipFile(buffer, "a") as archive:  # an archive comment pads it to the limit
        archive.comment = bytes(MAX_UPLOAD - len(buffer.getvalue()))
    assert len(buffer.getvalue()) == MAX_UPLOAD
    response = post(api, buffer.getvalue(), reuse="false")
    assert response.status_code == 202, response.text
    assert response.json()["dataset"]["image_shape"] == [30, MAX_SIDE]
