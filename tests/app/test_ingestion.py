"""Datasets as people have them: images of many sizes, modes and formats, brought to one size and
one channel layout; the EXIF orientation; a Hugging Face parquet's image paths; the pixel limit;
the ``image_size`` option as the API stores it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.formats import DatasetError, Limits, inspect_dataset, load_dataset
from app.formats.sizing import to_square
from tests.dataset_files import (
    ENCODINGS,
    GREY_ENCODINGS,
    encode_image,
    encode_png,
    loaded_order,
    varied,
    write_hub_parquet,
    write_npz,
    write_varied_imagefolder_zip,
    write_zip,
)

RNG = np.random.default_rng(0)


def greys(n: int) -> np.ndarray:
    return RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)


def test_a_zip_of_every_size_and_mode_decodes_to_one_colour_array(tmp_path: Path) -> None:
    images = greys(2 * len(ENCODINGS))
    turned = list(ENCODINGS).index("turned")
    images[turned] = 0
    images[turned, :14] = 255  # shown: bright above, dark below
    files = varied(images)  # 15x20, 64x48 and 250x200; every encoding, the turned JPEG 250x200
    paths = write_varied_imagefolder_zip(tmp_path / "mixed.zip", files, np.arange(len(files)) % 2)
    order = loaded_order(paths).tolist()

    assert inspect_dataset(tmp_path / "mixed.zip").image_shape == (32, 32, 3)
    loaded = load_dataset(tmp_path / "mixed.zip")
    assert loaded.images.shape == (len(files), 32, 32, 3)
    assert loaded.images.dtype == np.uint8
    for encoding in GREY_ENCODINGS:  # grey among colour: three equal channels
        grey = loaded.images[order.index(list(ENCODINGS).index(encoding))].astype(int)
        assert (grey == grey[..., :1]).all(), encoding
    # The EXIF orientation was applied: shown upright, the bright half is on top (stored, it is
    # on the left).
    shown = loaded.images[order.index(turned)].astype(int)
    assert (shown[:12, :, 0] > 200).all()
    assert (shown[20:, :, 0] < 40).all()
    assert (shown[20:, :, 2] > 200).all()  # tinted: the dark half is blue

    assert inspect_dataset(tmp_path / "mixed.zip", image_size=48).image_shape == (48, 48, 3)
    resized = load_dataset(tmp_path / "mixed.zip", image_size=48).images
    assert resized.shape == (len(files), 48, 48, 3)


def test_a_grey_zip_of_mixed_sizes_stays_one_channel(tmp_path: Path) -> None:
    image = greys(1)[0]
    files = varied(np.repeat(image[None], 8, axis=0), GREY_ENCODINGS, [(40, 30), (30, 40)])
    paths = write_varied_imagefolder_zip(tmp_path / "grey.zip", files, np.arange(8) % 2)
    assert inspect_dataset(tmp_path / "grey.zip").image_shape == (32, 32)
    loaded = load_dataset(tmp_path / "grey.zip")
    assert loaded.images.shape == (8, 32, 32)
    by_input = loaded.images[np.argsort(loaded_order(paths))].astype(int)
    # The same image at the same size, as 8-bit and as 16-bit grey: 16 bits scaled, not clipped.
    eight, sixteen = GREY_ENCODINGS.index("L"), GREY_ENCODINGS.index("I;16")
    assert np.abs(by_input[eight] - by_input[sixteen]).max() <= 1


def test_alpha_is_dropped_rather_than_composited(tmp_path: Path) -> None:
    clear = np.zeros((16, 16, 4), np.uint8)
    clear[..., :3] = (200, 10, 10)  # a colour under fully transparent pixels
    grey = Image.merge("LA", [Image.new("L", (16, 16), 30), Image.new("L", (16, 16), 0)])
    members = {"a/0.png": encode_image(Image.fromarray(clear)), "b/0.png": encode_image(grey)}
    write_zip(tmp_path / "alpha.zip", members)
    loaded = load_dataset(tmp_path / "alpha.zip")
    assert (loaded.images[0] == (200, 10, 10)).all()
    assert (loaded.images[1] == 30).all()


def bands(values: list[int], width: int, height: int) -> np.ndarray:
    """``height`` rows of vertical bands, ``width`` columns each."""
    return np.tile(np.repeat(np.array(values, np.uint8), width), (height, 1))


def test_an_image_is_squared_by_its_short_side_and_its_centre() -> None:
    wide = bands([0, 80, 160, 240], width=32, height=64)  # 64 x 128
    square = np.asarray(to_square(Image.fromarray(wide), 32)).astype(int)
    assert square.shape == (32, 32)
    # The short side scaled by half, so the aspect kept: each band is 16 columns wide, and the
    # square holds the two middle ones; the outer ones are cropped away.
    # (LANCZOS reaches 6 source pixels, 3 of the square's, across each band's edge.)
    assert np.abs(square[:, 4:12] - 80).max() <= 1
    assert np.abs(square[:, 20:28] - 160).max() <= 1
    # One resampling of the centre, as scaling the short side and cropping the centre does.
    scaled = Image.fromarray(wide).resize((64, 32), Image.Resampling.LANCZOS)
    assert np.abs(square - np.asarray(scaled.crop((16, 0, 48, 32)))).max() <= 2
    # A tall image alike, turned.
    tall = np.asarray(to_square(Image.fromarray(np.ascontiguousarray(wide.T)), 32)).astype(int)
    assert np.abs(tall - square.T).max() <= 1
    # Enlarged, a small image keeps its centre too.
    small = np.asarray(to_square(Image.fromarray(bands([0, 90, 180], 10, 10)), 60)).astype(int)
    assert np.abs(small[:, 25:35] - 90).max() <= 2


def test_an_npz_is_resized_only_when_asked(tmp_path: Path) -> None:
    wide = bands([0, 80, 160, 240], width=32, height=64)
    images = np.stack([wide, 255 - wide])[..., None]  # with a channel axis
    write_npz(tmp_path / "d.npz", images, np.array([0, 1]))
    assert inspect_dataset(tmp_path / "d.npz").image_shape == (64, 128, 1)
    np.testing.assert_array_equal(load_dataset(tmp_path / "d.npz").images, images)

    assert inspect_dataset(tmp_path / "d.npz", image_size=32).image_shape == (32, 32, 1)
    resized = load_dataset(tmp_path / "d.npz", image_size=32).images
    assert resized.shape == (2, 32, 32, 1)
    expected = np.asarray(to_square(Image.fromarray(wide), 32))
    np.testing.assert_array_equal(resized[0, ..., 0], expected)

    squares = images[:, :, :64]  # already 64 x 64: kept as they are
    write_npz(tmp_path / "s.npz", squares, np.array([0, 1]))
    np.testing.assert_array_equal(load_dataset(tmp_path / "s.npz", image_size=64).images, squares)


def test_a_hub_parquet_gives_each_row_its_path(tmp_path: Path) -> None:
    files = varied(greys(6))
    paths = ["train/0.png", None, "", "bad\x00name.png", "x" * 2000, "train/5.jpg"]
    write_hub_parquet(tmp_path / "d.parquet", [data for _, data in files], np.arange(6) % 2, paths)
    loaded = load_dataset(tmp_path / "d.parquet")
    assert loaded.images.shape == (6, 32, 32, 3)
    # Rows without a usable path (none, empty, not printable, absurdly long) have none.
    assert loaded.paths == ["train/0.png", None, None, None, None, "train/5.jpg"]

    write_hub_parquet(
        tmp_path / "e.parquet", [data for _, data in files], np.arange(6) % 2, [None] * 6
    )
    assert load_dataset(tmp_path / "e.parquet").paths is None


def test_the_pixel_limit_is_the_services_not_pils(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    png = encode_png(np.zeros((16, 16), np.uint8))
    write_zip(tmp_path / "d.zip", {"data/a/0.png": png, "data/b/0.png": png})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL's own check would refuse 16 x 16
    assert load_dataset(tmp_path / "d.zip").images.shape == (2, 16, 16)
    with pytest.raises(
        DatasetError, match=r"'data/a/0.png' is 16x16, 256 pixels; images may have at most 255"
    ):
        inspect_dataset(tmp_path / "d.zip", limits=Limits(max_image_pixels=255))


def test_an_image_size_outside_its_bounds_is_the_callers_mistake(tmp_path: Path) -> None:
    for size in (7, 513):
        with pytest.raises(ValueError, match="image_size must be from 8 to 512") as raised:
            load_dataset(tmp_path / "never-read.zip", image_size=size)
        assert not isinstance(raised.value, DatasetError)


def test_image_size_is_stored_and_part_of_the_reuse_key(client: TestClient, npz_path: Path) -> None:
    def post(**fields: str) -> tuple[int, dict[str, Any]]:
        with npz_path.open("rb") as file:
            response = client.post("/audits", files={"file": ("f.npz", file)}, data=fields)
        return response.status_code, response.json()

    status, plain = post()
    assert (status, plain["image_size"], plain["dataset"]["image_shape"]) == (202, None, [28, 28])
    status, sized = post(image_size="16")
    assert (status, sized["image_size"], sized["dataset"]["image_shape"]) == (202, 16, [16, 16])
    assert post(image_size="16") == (200, sized)  # the same option: reused
    status, blank = post(image_size=" ")
    assert (status, blank["id"]) == (200, plain["id"])  # blank is absent


@pytest.mark.parametrize("verb", ["submit", "ci", "scan"])
def test_the_command_line_takes_an_image_size_in_bounds(tmp_path: Path, verb: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", verb, tmp_path / "d.npz", "--image-size", "513"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--image-size: must be an integer from 8 to 512; got '513'" in done.stderr
