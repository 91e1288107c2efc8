"""Storage in a local directory: writes that are whole or absent, and the download cache's
housekeeping."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from app.download_cache import STALE_PART_S, DownloadCache
from app.storage import Storage


def test_put_bytes_is_whole_or_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = Storage(str(tmp_path / "storage"))
    storage.put_bytes(b"old", "audits/a/checkpoint.npz")

    def crash(fd: int) -> None:
        raise OSError(errno.EIO, "the disk went away")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk"):
        storage.put_bytes(b"new", "audits/a/checkpoint.npz")
    assert storage.get_bytes("audits/a/checkpoint.npz") == b"old"
    assert os.listdir(tmp_path / "storage" / "audits" / "a") == ["checkpoint.npz"]
    monkeypatch.undo()
    storage.put_bytes(b"new", "audits/a/checkpoint.npz")
    assert storage.get_bytes("audits/a/checkpoint.npz") == b"new"
    assert (
        tmp_path / "storage" / "audits" / "a" / "checkpoint.npz"
    ).stat().st_mode & 0o777 != 0o600


def test_put_file_moves_across_filesystems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = Storage(str(tmp_path / "storage"))
    upload = tmp_path / "upload.npz"
    upload.write_bytes(b"dataset")
    replace = os.replace

    def no_rename_across(source: str | Path, target: str | Path) -> None:
        if Path(source) == upload:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        replace(source, target)

    monkeypatch.setattr(os, "replace", no_rename_across)
    storage.put_file(upload, "audits/a/dataset.npz")
    assert not upload.exists()
    assert storage.get_bytes("audits/a/dataset.npz") == b"dataset"


def test_local_reads_and_deletes(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "storage"), cache_dir=tmp_path / "cache", cache_bytes=10)
    assert storage.is_local
    assert storage.cache is None, "local files need no cache"
    storage.put_bytes(b"x", "audits/a/dataset.npz")
    with storage.local_copy("audits/a/dataset.npz") as path:
        assert path == tmp_path / "storage" / "audits" / "a" / "dataset.npz"
    assert storage.local_dir("audits/a") == path.parent
    storage.delete("audits/a/dataset.npz")
    storage.delete("audits/a/dataset.npz")
    assert not storage.exists("audits/a/dataset.npz")
    storage.delete_prefix("audits/a")
    storage.delete_prefix("audits/a")
    assert not storage.exists("audits/a")
    with pytest.raises(ValueError, match="bad storage key"):
        storage.delete("../outside")


def test_dead_downloads_are_cleared(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path, max_bytes=100)
    dead, live = tmp_path / ".a.1.part", tmp_path / ".b.2.part"
    dead.write_bytes(b"x")
    live.write_bytes(b"x")
    old = time.time() - STALE_PART_S - 60
    os.utime(dead, (old, old))
    cache.evict()
    assert not dead.exists()
    assert live.exists()
