"""A worker host's bounded cache of the datasets it downloaded from object storage.

An audit's bags run as tasks of their own, several of them on one host: each would otherwise
download the dataset again. A file is named by the storage key and the object's version (size and
ETag), so a changed object is fetched anew and the old version ages out. The least recently used
files go when the total passes the bound. Worker processes on one host share the folder: a file is
fetched under a temporary name and renamed into place, and a file in use is held with a shared
lock, which eviction respects (so files in use stay, even over the bound).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

# A partial download untouched this long belongs to a process that died.
STALE_PART_S = 3600.0


class DownloadCache:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    def path_of(self, key: str, version: str) -> Path:
        digest = hashlib.sha256(f"{key}\n{version}".encode()).hexdigest()[:32]
        return self.folder / f"{digest}-{PurePosixPath(key).name}"

    @contextmanager
    def entry(self, key: str, version: str, fetch: Callable[[Path], None]) -> Iterator[Path]:
        """The cached file of ``key`` at ``version``, written by ``fetch(path)`` when missing. It
        stays in place until the block ends; callers only read it."""
        path = self.path_of(key, version)
        while True:
            if not path.exists():
                self._fetch(path, fetch)
            try:
                file = path.open("rb")
            except FileNotFoundError:
                continue  # evicted by another process since: fetch it again
            with file:
                fcntl.flock(file, fcntl.LOCK_SH)
                if not _is_at(file, path):
                    continue  # evicted between the open and the lock
                # Marks the use: access times are not kept on most mounts (noatime, relatime).
                os.utime(file.fileno())
                self.evict()
                yield path
                return

    def _fetch(self, path: Path, fetch: Callable[[Path], None]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        part = self.folder / f".{path.name}.{secrets.token_hex(8)}.part"
        try:
            fetch(part)
            os.replace(part, path)  # whole, also when another process fetched it meanwhile
        finally:
            part.unlink(missing_ok=True)

    def evict(self) -> None:
        """Remove the least recently used files until the total fits the bound."""
        files: list[tuple[float, int, Path]] = []
        now = time.time()
        for path in self.folder.iterdir():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # removed by another process meanwhile
            if path.name.startswith("."):
                if now - stat.st_mtime > STALE_PART_S:
                    path.unlink(missing_ok=True)
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            if _remove_unless_in_use(path):
                total -= size


def _is_at(file: BinaryIO, path: Path) -> bool:
    """Whether the open file is still the one at ``path``, not removed or replaced since."""
    try:
        return os.path.samestat(os.fstat(file.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _remove_unless_in_use(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a process reads it
            if not _is_at(file, path):
                return False  # fetched anew meanwhile
            path.unlink()
    except FileNotFoundError:
        pass  # another process removed it
    return True
