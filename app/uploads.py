"""Receive a multipart upload straight from the request stream.

The file part goes to a local spool file chunk by chunk while its SHA-256 is computed, so a
gigabyte upload never sits in memory, and the size limit is enforced as the bytes arrive (413
before the rest is read). Form fields are small and kept in memory, up to a limit.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from prometheus_client import Counter
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

FILE_FIELD = "file"
MAX_FIELD_BYTES = 4096
MAX_FIELDS = 32
MAX_PART_HEADER_BYTES = 16384
# What the body may carry besides the file: the form fields, boundaries and part headers.
FRAMING_BYTES = MAX_FIELDS * MAX_FIELD_BYTES + 65536
# Control characters have no place in a file name; NUL also cannot be stored in PostgreSQL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Counted once received whole, before the dataset's checks (a refused dataset counts too).
# Process-wide, as the process's traffic is; app.monitoring serves them at /metrics.
UPLOADS = Counter(
    "dataset_audit_uploads", "Uploads received whole by this API process.", registry=None
)
UPLOAD_BYTES = Counter(
    "dataset_audit_upload_bytes",
    "Bytes of dataset files received whole by this API process.",
    unit="bytes",
    registry=None,
)


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
        self.ended = False  # the closing boundary was seen
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._header_field = b""
        self._header_value = b""
        self._to_file = False  # in the file part
        self._part: str | None = None  # in this form field (None: in the file or an ignored part)
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
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._header_bytes = 0
        self._to_file = False
        self._part = None
        self._value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_value += data[start:end]

    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise UploadError(
                400, f"a multipart part's headers exceed {MAX_PART_HEADER_BYTES} bytes"
            )

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == FILE_FIELD and b"filename" in options:
            if self.file is not None:
                raise UploadError(422, "send one file per audit, in the field 'file'")
            self.filename = _clean_filename(options[b"filename"])
            handle, path = tempfile.mkstemp(prefix="upload-", dir=self.spool_dir)
            self.file = os.fdopen(handle, "wb")
            self.file_path = Path(path)
            self._to_file = True
        elif name == FILE_FIELD:
            raise UploadError(
                422, "the field 'file' came without a filename: send the dataset as a file upload"
            )
        elif name and b"filename" not in options:
            if len(self.fields) >= MAX_FIELDS:
                raise UploadError(422, "too many form fields")
            self._part = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._to_file:
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
        if self._to_file:
            assert self.file is not None
            self.file.close()
        elif self._part is not None:
            value = self._value.decode("utf-8", "replace")
            if "\x00" in value:
                raise UploadError(422, f"form field '{self._part}' contains a NUL character")
            self.fields[self._part] = value
        self._to_file = False
        self._part = None

    def on_end(self) -> None:
        self.ended = True

    @property
    def in_file(self) -> bool:
        return self.file is not None and not self.file.closed

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
    """Parse a multipart/form-data body into a spooled file (field ``file``) and form fields.

    Reading stops at the first byte past the limit: of the file, or of the whole body (parts
    that are not the file are read and dropped, but not without end).
    """
    mime, options = parse_options_header(content_type or "")
    if mime != b"multipart/form-data" or b"boundary" not in options:
        raise UploadError(
            415, "send the dataset as multipart/form-data, the file in the field 'file'"
        )
    max_body = max_bytes + FRAMING_BYTES
    declared = content_length or ""
    if declared.isascii() and declared.isdigit() and int(declared) > max_body:
        raise UploadError(413, f"the upload is larger than the limit of {max_bytes} bytes")
    spool_dir.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(spool_dir, max_bytes)
    try:
        received = await _parse(stream, receiver, options[b"boundary"], max_body)
    except BaseException:
        receiver.cleanup()
        raise
    if not receiver.ended:
        message = _cut_short(received, inside_file=receiver.in_file)
        receiver.cleanup()
        raise UploadError(400, message)
    if receiver.file_path is None:
        raise UploadError(422, "no file: send the dataset in the multipart field 'file'")
    UPLOADS.inc()
    UPLOAD_BYTES.inc(receiver.size)
    return Upload(
        path=receiver.file_path,
        filename=receiver.filename,
        size=receiver.size,
        sha256=receiver.digest.hexdigest(),
        fields=receiver.fields,
    )


async def _parse(
    stream: AsyncIterator[bytes], receiver: _Receiver, boundary: bytes, max_body: int
) -> int:
    """Feed the body to the parser; the number of bytes received."""
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > max_body:
                raise UploadError(
                    413, f"the upload is larger than the limit of {receiver.max_bytes} bytes"
                )
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise UploadError(400, f"malformed multipart body: {exc}") from exc
    except ClientDisconnect as exc:
        # Nobody reads this answer; it spares the log a traceback for a common event.
        raise UploadError(400, "the client disconnected before the upload ended") from exc
    return received


def _cut_short(received: int, *, inside_file: bool) -> str:
    if received == 0:
        return "the request body is empty: send the dataset in the multipart field 'file'"
    where = "inside the file" if inside_file else "before its closing boundary"
    return f"the multipart body ended {where}: the upload was cut short"


def _clean_filename(raw: bytes) -> str:
    """The name alone, without the client's folders (either separator) or control characters."""
    name = re.split(r"[/\\]", raw.decode("utf-8", "replace"))[-1]
    return _CONTROL.sub("", name)
