"""Where uploads live: a local directory by default, any fsspec URL (``s3://bucket/prefix``) when
API and workers run on different machines."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem


class Storage:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad storage key {key!r}")
        return f"{self.root}/{key}"

    def put_file(self, local_path: Path, key: str) -> None:
        """Move (locally) or upload a finished file under ``key``."""
        target = self._path(key)
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        if self.is_local:
            shutil.move(local_path, target)
        else:
            self.fs.put_file(str(local_path), target)
            local_path.unlink()

    def put_bytes(self, data: bytes, key: str) -> None:
        target = self._path(key)
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(target, "wb") as file:
            file.write(data)

    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        try:
            with self.fs.open(self._path(key), "rb") as file:
                data: bytes = file.read()
        except FileNotFoundError:
            return None
        return data

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A local path holding the object: the file itself when storage is local."""
        path = self._path(key)
        if self.is_local:
            yield Path(path)
            return
        with tempfile.TemporaryDirectory(prefix="dataset-audit-") as folder:
            local = Path(folder) / os.path.basename(key)
            self.fs.get_file(path, str(local))
            yield local

    def local_dir(self, prefix: str) -> Path | None:
        """The local directory for ``prefix``, or None when storage is remote."""
        return Path(self._path(prefix)) if self.is_local else None

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
