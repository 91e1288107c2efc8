"""ImageFolder ``.zip`` uploads: one folder per class, PNG/JPEG images inside.

Labels follow torchvision's ImageFolder (index of the class folder in sorted name order); samples
are in sorted member-path order so that indices are deterministic. One top-level folder holding
the class folders (what ``zip -r data.zip mydata/`` writes) is stripped.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.formats.base import (
    DatasetError,
    DatasetInfo,
    Limits,
    LoadedDataset,
    check_class_names,
    check_sample_count,
)
from app.formats.images import Named, decode_all, survey
from app.formats.zipsafe import check_entry_name, check_member, check_total, open_zip, read_member

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_ARCHIVE_EXTENSIONS = (".zip", ".npz", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar")
_JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class _Layout:
    classes: list[str]
    samples: list[zipfile.ZipInfo]  # in sorted path order
    labels: npt.NDArray[np.int64]


def inspect(path: str | os.PathLike[str], limits: Limits, image_size: int | None) -> DatasetInfo:
    """Every image's header is read (size, mode, PNG checksums): a broken or oversized image is
    refused at upload rather than failing the audit later. No pixel is decoded."""
    with open_zip(path, limits) as archive:
        layout = _scan(archive, limits)
        members = _members(archive, layout, limits)
        plan = survey(len(layout.samples), members, limits, image_size, verify=True)
    return DatasetInfo(
        format="imagefolder",
        n_samples=len(layout.samples),
        image_shape=plan.shape,
        n_classes=len(layout.classes),
        classes=layout.classes,
    )


def load(path: str | os.PathLike[str], limits: Limits, image_size: int | None) -> LoadedDataset:
    with open_zip(path, limits) as archive:
        layout = _scan(archive, limits)
        images = decode_all(
            len(layout.samples), lambda: _members(archive, layout, limits), limits, image_size
        )
    return LoadedDataset(
        images=images,
        labels=layout.labels,
        classes=layout.classes,
        paths=[info.filename for info in layout.samples],
    )


def _members(archive: zipfile.ZipFile, layout: _Layout, limits: Limits) -> Iterator[Named]:
    for info in layout.samples:
        yield info.filename, read_member(archive, info, limits.max_member_bytes)


def _scan(archive: zipfile.ZipFile, limits: Limits) -> _Layout:
    """The classes and samples, from the central directory alone."""
    if not archive.infolist():
        raise DatasetError(
            "the archive is empty: expected one folder per class, "
            "each holding that class's PNG or JPEG images"
        )
    entries = _entries(archive)
    root = _root(entries)
    folders: set[str] = set()
    samples: list[tuple[str, zipfile.ZipInfo]] = []  # (class, member)
    for parts, info in entries:
        relative = parts[1:] if root else parts
        if info.is_dir():
            if len(relative) == 1:
                folders.add(relative[0])
            continue
        if not relative:
            raise DatasetError(
                f"archive entry '{info.filename}' is a file, yet the archive also uses it as "
                "the folder that holds the class folders"
            )
        is_image = relative[-1].lower().endswith(IMAGE_EXTENSIONS)
        if len(relative) == 1:
            if is_image:
                raise DatasetError(
                    f"image '{info.filename}' is outside any class folder: "
                    "put each image in a folder named after its class"
                )
            continue  # a README or the like beside the class folders
        if len(relative) > 2:
            raise DatasetError(
                f"'{info.filename}' is nested too deep: expected <class>/<image>, "
                "one folder per class"
            )
        if not is_image:
            raise DatasetError(
                f"'{info.filename}' is not an image: class folders may hold only "
                f"{', '.join(IMAGE_EXTENSIONS)} files"
            )
        folders.add(relative[0])
        samples.append((relative[0], info))

    classes = sorted(folders)
    _check_classes(classes, [folder for folder, _ in samples])
    check_sample_count(len(samples), limits)
    samples.sort(key=lambda sample: sample[1].filename)
    for _, info in samples:
        check_member(info, limits.max_member_bytes, limits)
    check_total((info for _, info in entries), limits)
    index = {name: label for label, name in enumerate(classes)}
    return _Layout(
        classes=classes,
        samples=[info for _, info in samples],
        labels=np.array([index[folder] for folder, _ in samples], dtype=np.int64),
    )


def _entries(archive: zipfile.ZipFile) -> list[tuple[list[str], zipfile.ZipInfo]]:
    """Every entry but OS junk, as (path components, member), after refusing unsafe ones."""
    entries = []
    seen: set[str] = set()
    for info in archive.infolist():
        check_entry_name(info)
        if info.filename in seen:
            raise DatasetError(f"archive entry '{info.filename}' appears twice")
        seen.add(info.filename)
        parts = [part for part in info.filename.split("/") if part]
        if not parts or any(part.startswith(".") or part in _JUNK_NAMES for part in parts):
            continue
        if not info.is_dir() and parts[-1].lower().endswith(_ARCHIVE_EXTENSIONS):
            raise DatasetError(
                f"'{info.filename}' is an archive inside the archive; nested archives are not "
                "supported, put the images themselves in the class folders"
            )
        entries.append((parts, info))
    return entries


def _root(entries: list[tuple[list[str], zipfile.ZipInfo]]) -> str | None:
    """The single top-level folder, when it is the one holding the class folders."""
    if len({parts[0] for parts, _ in entries}) != 1:
        return None
    has_subfolders = any(
        len(parts) >= 3 or (info.is_dir() and len(parts) == 2) for parts, info in entries
    )
    return entries[0][0][0] if has_subfolders else None


def _check_classes(classes: list[str], sample_classes: list[str]) -> None:
    if not classes:
        raise DatasetError(
            "the archive holds no class folders: expected one folder per class, "
            "each holding that class's PNG or JPEG images"
        )
    if len(classes) < 2:
        raise DatasetError(
            f"found one class folder ('{classes[0]}'); an audit needs at least 2 classes"
        )
    check_class_names(classes, "class folders")
    empty = sorted(set(classes) - set(sample_classes))
    if empty:
        raise DatasetError(f"class folder '{empty[0]}' holds no images")
