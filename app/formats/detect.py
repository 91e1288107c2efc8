"""Telling the upload formats apart by content: users name files anything."""

from __future__ import annotations

import os

from app.formats.base import DatasetError, DatasetFormat, Limits
from app.formats.zipsafe import open_zip

ACCEPTED = (
    "an .npz with arrays x (images) and y (labels), "
    "an ImageFolder .zip (one folder of PNG/JPEG images per class), "
    "or a Hugging Face .parquet export (image and label columns)"
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive
_DEFAULT_LIMITS = Limits()
# Formats people upload by mistake, named so the refusal says what was received.
_OTHER_MAGIC = {
    b"\x1f\x8b": "a gzip file",
    b"\x89PNG": "a single PNG image",
    b"\xff\xd8\xff": "a single JPEG image",
    b"7z\xbc\xaf": "a 7-Zip archive",
    b"Rar!": "a RAR archive",
    b"\x93NUMPY": "a single .npy array",
}


def detect_format(path: str | os.PathLike[str], limits: Limits = _DEFAULT_LIMITS) -> DatasetFormat:
    with open(path, "rb") as file:
        head = file.read(8)
    if not head:
        raise DatasetError(f"unrecognized dataset file (the file is empty); accepted: {ACCEPTED}")
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(_ZIP_MAGIC):
        with open_zip(path, limits) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
        is_npz = "x.npy" in names or "y.npy" in names
        return (
            "npz" if is_npz or (names and all(n.endswith(".npy") for n in names)) else "imagefolder"
        )
    got = next((what for magic, what in _OTHER_MAGIC.items() if head.startswith(magic)), None)
    received = f"got {got}" if got else "the file is none of these"
    raise DatasetError(f"unrecognized dataset file ({received}); accepted: {ACCEPTED}")
