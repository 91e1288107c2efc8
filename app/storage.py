"""Where uploads live: a local directory by default; object storage (``s3://bucket/prefix``, with
s3fs: ``pip install 'dataset-audit[s3]'``) when API and workers run on different machines."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from app.download_cache import DownloadCache
from app.settings import Settings


class Storage:
    def __init__(
        self,
        url: str,
        options: Mapping[str, Any] | None = None,
        *,
        cache_dir: Path | None = None,
        cache_bytes: int = 0,
    ) -> None:
        """``options`` go to the fsspec filesystem (s3fs: ``key``, ``secret``, ``client_kwargs``).
        With ``cache_dir`` and ``cache_bytes``, ``local_copy`` keeps up to that many bytes of
        downloads there."""
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(options or {}))
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            self.fs.makedirs(self.root, exist_ok=True)
        self.cache = (
            DownloadCache(cache_dir, cache_bytes)
            if cache_dir is not None and cache_bytes > 0 and not self.is_local
            else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        return cls(
            settings.resolved_storage_url,
            settings.storage_options,
            cache_dir=settings.storage_cache_dir,
            cache_bytes=settings.storage_cache_bytes,
        )

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad storage key {key!r}")
        return f"{self.root}/{key}"

    def put_file(self, local_path: Path, key: str) -> None:
        """Move (locally) or upload a finished file under ``key``; ``local_path`` is gone after."""
        target = self._path(key)
        if not self.is_local:
            self.fs.put_file(str(local_path), target)
            local_path.unlink()
            return
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(local_path, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            with _atomic_file(Path(target)) as file, local_path.open("rb") as source:
                shutil.copyfileobj(source, file)
            local_path.unlink()

    def put_bytes(self, data: bytes, key: str) -> None:
        """Write ``data`` under ``key``: readers see the old object or the new one, never part."""
        target = self._path(key)
        if self.is_local:
            with _atomic_file(Path(target)) as file:
                file.write(data)
        else:
            self.fs.pipe_file(target, data)  # an S3 put is atomic

    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        try:
            data: bytes = self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            return None
        return data

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A local path holding the object, to read only: the file itself when storage is local,
        else a download, from the cache when there is one."""
        path = self._path(key)
        if self.is_local:
            yield Path(path)
            return

        def download(local: Path) -> None:
            self.fs.get_file(path, str(local))

        if self.cache is not None:
            self.fs.invalidate_cache(path)  # the object may have changed since it was listed
            info = self.fs.info(path)
            if info["size"] <= self.cache.max_bytes:
                with self.cache.entry(key, _version(info), download) as cached:
                    yield cached
                return
        with tempfile.TemporaryDirectory(prefix="dataset-audit-") as folder:
            local = Path(folder) / os.path.basename(key)
            download(local)
            yield local

    def local_dir(self, prefix: str) -> Path | None:
        """The local directory for ``prefix``, or None when storage is remote."""
        return Path(self._path(prefix)) if self.is_local else None

    def exists(self, key: str) -> bool:
        path = self._path(key)
        self.fs.invalidate_cache(path)  # another process may have written or removed it
        return bool(self.fs.exists(path))

    def delete(self, key: str) -> None:
        """Remove one object; nothing happens when there is none."""
        with suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        self.fs.invalidate_cache(path)
        with suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)


@contextmanager
def _atomic_file(target: Path) -> Iterator[BinaryIO]:
    """A file that appears at ``target`` whole or not at all: written beside it under another
    name, synced, then renamed over it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.{secrets.token_hex(8)}.part")
    # os.open, not mkstemp: the file gets the usual permissions (0666 less the umask), not 0600.
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def _version(info: Mapping[str, Any]) -> str:
    """What changes when the object does: its size, and its ETag or modification time."""
    stamps = (info.get(name) for name in ("ETag", "etag", "mtime", "LastModified", "updated"))
    return f"{info['size']}:{next((s for s in stamps if s), '')}"
