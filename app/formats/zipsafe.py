"""Reading untrusted zip archives without extracting them.

Sizes are checked from the central directory before anything is decompressed, and enforced again
while reading: those sizes are the uploader's claim, not a fact.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO

from app.formats.base import DatasetError, Limits

# bzip2 and lzma decompress without an output bound per call in zipfile, so one small read could
# expand without limit; stored and deflate are what zip tools and numpy write anyway.
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
# Below this size a high ratio (a blank image, a constant array) is harmless and common.
_RATIO_MIN_BYTES = 2**20
_CHUNK = 2**20
_DRIVE = re.compile(r"^[A-Za-z]:")
# A directory entry is 46 bytes plus its name and extra fields; dataset paths are short.
_DIRECTORY_BYTES_PER_ENTRY = 256
# What reading a member of a hostile archive raises (zlib.error: a corrupt deflate stream).
MEMBER_ERRORS = (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError)
_OPEN_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError)


@contextmanager
def open_zip(path: str | os.PathLike[str], limits: Limits) -> Iterator[zipfile.ZipFile]:
    # Opened here so that a missing file stays an OSError (the caller's bug, not the upload's).
    with open(path, "rb") as file:
        try:
            _check_directory(file, limits)
            archive = zipfile.ZipFile(file)
        except _OPEN_ERRORS as exc:
            raise DatasetError(
                f"not a readable zip archive (truncated or corrupt?): {exc}"
            ) from exc
        with archive:
            _check_names(archive)
            yield archive


def _check_directory(file: IO[bytes], limits: Limits) -> None:
    """Refuses a central directory too large to list: ZipFile builds an object per entry (and
    walks the directory by its byte size, whatever count it declares) before we see any."""
    # zipfile's own reader of the end record (zip64-aware), so both see the same directory.
    end = zipfile._EndRecData(file)  # type: ignore[attr-defined]
    if end is None:
        return  # not a zip archive: ZipFile says so
    entries, size = int(end[4]), int(end[5])  # total entries, directory bytes
    if entries > limits.max_entries:
        raise DatasetError(
            f"the archive lists {entries} entries; at most {limits.max_entries} allowed"
        )
    if size > limits.max_entries * _DIRECTORY_BYTES_PER_ENTRY:
        raise DatasetError(
            f"the archive's directory is {size} bytes, too large for "
            f"{limits.max_entries} entries: this looks like a zip bomb"
        )


def _check_names(archive: zipfile.ZipFile) -> None:
    # zipfile ends a name at its first NUL, so a name may come out empty (and is_dir() fails).
    for number, info in enumerate(archive.infolist(), start=1):
        if not info.filename:
            raise DatasetError(f"archive entry {number} has an empty name")


def check_entry_name(info: zipfile.ZipInfo) -> None:
    """Refuses names that would escape a folder if extracted, and links, which point anywhere."""
    name = info.filename
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise DatasetError(f"archive entry '{name}' has an absolute path")
    if ".." in re.split(r"[/\\]", name):
        raise DatasetError(f"archive entry '{name}' points outside the archive ('..')")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DatasetError(f"archive entry '{name}' is a symbolic link; links are not allowed")


def check_member(info: zipfile.ZipInfo, max_bytes: int, limits: Limits) -> None:
    """Refuses a member that we cannot read safely, judged from the central directory alone."""
    name = info.filename
    if info.flag_bits & 0x1:
        raise DatasetError(f"'{name}' is encrypted; upload an archive without a password")
    if info.compress_type not in _METHODS:
        raise DatasetError(
            f"'{name}' uses zip compression method {info.compress_type}; "
            "only stored and deflate are supported"
        )
    if info.file_size > max_bytes:
        raise DatasetError(
            f"'{name}' is {info.file_size} bytes uncompressed; at most {max_bytes} allowed"
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size >= _RATIO_MIN_BYTES and ratio > limits.max_compression_ratio:
        raise DatasetError(
            f"'{name}' expands {ratio:.0f}x ({info.compress_size} bytes to {info.file_size}); "
            f"at most {limits.max_compression_ratio:g}x allowed: this looks like a zip bomb"
        )


def check_total(infos: Iterable[zipfile.ZipInfo], limits: Limits) -> None:
    """Refuses an archive too large expanded, or too compressed overall: many members, each
    under the ratio floor, can add up to a bomb that no single member reveals."""
    infos = list(infos)
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        raise DatasetError(
            f"the archive is {total} bytes uncompressed; at most {limits.max_total_bytes} allowed"
        )
    packed = sum(info.compress_size for info in infos)
    ratio = total / max(packed, 1)
    if total >= _RATIO_MIN_BYTES and ratio > limits.max_compression_ratio:
        raise DatasetError(
            f"the archive's {len(infos)} members expand {ratio:.0f}x ({packed} bytes to "
            f"{total}); at most {limits.max_compression_ratio:g}x allowed: this looks like a "
            "zip bomb"
        )


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> bytes:
    """The member's bytes, refusing it as soon as it yields more than ``max_bytes``."""
    chunks: list[bytes] = []
    total = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise DatasetError(
                        f"'{info.filename}' expands beyond {max_bytes} bytes; refused"
                    )
                chunks.append(chunk)
    except MEMBER_ERRORS as exc:
        raise DatasetError(f"'{info.filename}' is corrupt in the archive: {exc}") from exc
    return b"".join(chunks)
