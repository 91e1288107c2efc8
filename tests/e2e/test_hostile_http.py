"""The API as deployed (a uvicorn process) against hostile HTTP: huge request headers, and uploads
that lie about their length or are abandoned midway. Raw sockets, since HTTP clients will not
misbehave on purpose."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from app.settings import Settings
from tests.e2e.servers import until

BOUNDARY = "hostileboundary"
HUGE_HEADER = 100_000


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname or "", parts.port or 80), timeout=10)


def status_of(sock: socket.socket) -> int | None:
    """The status code of the answer, or None when the server closed without one."""
    answer = b""
    while b"\r\n" not in answer:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        answer += chunk
    return int(answer.split(b" ", 2)[1])


def upload_head(url: str, content_length: int) -> bytes:
    host = urlsplit(url).netloc
    part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="d.npz"\r\n\r\n'
    return (
        f"POST /audits HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {content_length}\r\n\r\n{part}"
    ).encode()


def spooled(settings: Settings) -> list[Path]:
    spool = settings.data_dir / "spool"
    return [path for path in spool.iterdir() if path.is_file()] if spool.exists() else []


def audit_count(url: str) -> int:
    total: int = httpx.get(f"{url}/audits", timeout=10).json()["total"]
    return total


def new_log(log_path: Path, start: int) -> str:
    return log_path.read_bytes()[start:].decode("utf-8", "replace")


def test_huge_headers_are_refused_and_the_server_keeps_serving(service_url: str) -> None:
    with connect(service_url) as sock:
        sock.sendall(
            f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Huge: {'a' * HUGE_HEADER}\r\n\r\n".encode()
        )
        assert status_of(sock) == 431
    assert httpx.get(f"{service_url}/healthz", timeout=10).status_code == 200


def test_an_abandoned_upload_leaves_no_spool_file_and_no_audit(
    service_url: str, service_settings: Settings
) -> None:
    audits = audit_count(service_url)
    log_path = service_settings.data_dir / "api.log"
    log_start = log_path.stat().st_size
    with connect(service_url) as sock:
        sock.sendall(upload_head(service_url, content_length=50 * 2**20))
        for _ in range(8):  # slowly, 256 KiB of 50 MiB
            sock.sendall(bytes(2**15))
            time.sleep(0.05)
        # The server is spooling the file: the test abandons a real upload in progress.
        assert until(lambda: len(spooled(service_settings)) == 1), "no upload was spooled"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    # Closed with a reset, as a client killed midway; the server notices and cleans up.
    assert until(lambda: not spooled(service_settings)), spooled(service_settings)
    assert audit_count(service_url) == audits
    assert httpx.get(f"{service_url}/healthz", timeout=10).status_code == 200
    assert "Traceback" not in new_log(log_path, log_start)  # a disconnect is no server error


def test_a_body_shorter_than_its_length_leaves_nothing(
    service_url: str, service_settings: Settings
) -> None:
    """The client stops sending but keeps the connection: uvicorn waits (a proxy's body timeout
    ends that in production); once the client gives up, nothing is left."""
    audits = audit_count(service_url)
    with connect(service_url) as sock:
        sock.sendall(upload_head(service_url, content_length=2**20) + bytes(1000))
        assert until(lambda: len(spooled(service_settings)) == 1)
    assert until(lambda: not spooled(service_settings)), spooled(service_settings)
    assert audit_count(service_url) == audits


def test_a_declared_length_over_the_limit_is_refused_unread(
    service_url: str, service_settings: Settings
) -> None:
    audits = audit_count(service_url)
    with connect(service_url) as sock:
        sock.sendall(upload_head(service_url, content_length=service_settings.max_upload_bytes * 2))
        assert status_of(sock) == 413
    assert not spooled(service_settings)
    assert audit_count(service_url) == audits
