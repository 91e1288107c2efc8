"""Receive a multipart upload straight from the request stream.

The file part goes to a local spool file chunk by chunk while its SHA-256 is computed, so a
gigabyte upload never sits in memory, and the size limit is enforced as the bytes arrive (413
before the rest is read). Form fields are small and kept in memory, up to a limit.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

FILE_FIELD = "file"
MAX_FIELD_BYTES = 4096
MAX_FIELDS = 32


class UploadError(Exception):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@dataclass
class Upload:
    path: Path  # the spooled file; the caller moves or deletes it
    filename: str
    size: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class _Receiver:
    """python-multipart callbacks that route the file part to disk and fields to memory."""

    def __init__(self, spool_dir: Path, max_bytes: int) -> None:
        self.spool_dir = spool_dir
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.file: IO[bytes] | None = None
        self.file_path: Path | None = None
        self.filename = ""
        self.size = 0
        self.digest = hashlib.sha256()
        self._headers: dict[bytes, bytes] = {}
        self._header_field = b""
        self._header_value = b""
        self._part: str | None = None  # "file", a field name, or None for an ignored part
        self._value = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._part = None
        self._value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == FILE_FIELD and b"filename" in options:
            if self.file is not None:
                raise UploadError(422, "send one file per audit, in the field 'file'")
            self.filename = os.path.basename(options[b"filename"].decode("utf-8", "replace"))
            handle, path = tempfile.mkstemp(prefix="upload-", dir=self.spool_dir)
            self.file = os.fdopen(handle, "wb")
            self.file_path = Path(path)
            self._part = FILE_FIELD
        elif name and b"filename" not in options:
            if len(self.fields) >= MAX_FIELDS:
                raise UploadError(422, "too many form fields")
            self._part = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._part == FILE_FIELD:
            assert self.file is not None
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise UploadError(
                    413, f"the upload is larger than the limit of {self.max_bytes} bytes"
                )
            self.digest.update(chunk)
            self.file.write(chunk)
        elif self._part is not None:
            self._value += chunk
            if len(self._value) > MAX_FIELD_BYTES:
                raise UploadError(422, f"form field '{self._part}' is too long")

    def on_part_end(self) -> None:
        if self._part == FILE_FIELD:
            assert self.file is not None
            self.file.close()
        elif self._part is not None:
            self.fields[self._part] = self._value.decode("utf-8", "replace")
        self._part = None

    def cleanup(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.file_path is not None:
            self.file_path.unlink(missing_ok=True)


async def receive_upload(
    content_type: str | None,
    content_length: str | None,
    stream: AsyncIterator[bytes],
    *,
    spool_dir: Path,
    max_bytes: int,
) -> Upload:
    """Parse a multipart/form-data body into a spooled file (field ``file``) and form fields."""
    mime, options = parse_options_header(content_type or "")
    if mime != b"multipart/form-data" or b"boundary" not in options:
        raise UploadError(
            415, "send the dataset as multipart/form-data, the file in the field 'file'"
        )
    # The body carries a little multipart framing besides the file: allow for it.
    if content_length and content_length.isdigit() and int(content_length) > max_bytes + 65536:
        raise UploadError(413, f"the upload is larger than the limit of {max_bytes} bytes")
    spool_dir.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(spool_dir, max_bytes)
    parser = MultipartParser(options[b"boundary"], receiver.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except UploadError:
        receiver.cleanup()
        raise
    except MultipartParseError as exc:
        receiver.cleanup()
        raise UploadError(400, f"malformed multipart body: {exc}") from exc
    except BaseException:
        receiver.cleanup()
        raise
    if receiver.file is not None and not receiver.file.closed:
        receiver.cleanup()
        raise UploadError(400, "the multipart body ended inside the file: the upload was cut short")
    if receiver.file_path is None:
        raise UploadError(422, "no file: send the dataset in the multipart field 'file'")
    return Upload(
        path=receiver.file_path,
        filename=receiver.filename,
        size=receiver.size,
        sha256=receiver.digest.hexdigest(),
        fields=receiver.fields,
    )
