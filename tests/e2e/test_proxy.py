"""nginx with docker/nginx.conf.template in front of the API, as docker compose runs them: uploads
stream through, what nginx refuses never reaches the API, and each address has its cap."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import nginx_local
from tests.dataset_files import write_npz
from tests.e2e.conftest import free_port
from tests.e2e.raw_http import (
    MB,
    Api,
    closed_by_server,
    connect,
    read_response,
    running_api,
    until_closed,
    wait_until_answers,
)
from tests.e2e.servers import until

pytestmark = pytest.mark.skipif(nginx_local.NGINX is None, reason="nginx is not installed")

MAX_UPLOAD_BYTES = 64 * MB
PER_ADDRESS = 64  # the template's limit_conn
BOUNDARY = "proxyboundary"


@dataclass(frozen=True)
class Proxied:
    api: Api
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spooled(self) -> list[Path]:
        spool = self.api.data_dir / "spool"
        return [path for path in spool.iterdir() if path.is_file()] if spool.exists() else []


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    data_dir = tmp_path_factory.mktemp("proxied-api")
    with running_api(data_dir, MAX_UPLOAD_BYTES=str(MAX_UPLOAD_BYTES)) as api:
        port = free_port()
        conf = nginx_local.render(
            tmp_path_factory.mktemp("nginx"),
            listen_port=port,
            api_port=api.port,
            max_upload_bytes=MAX_UPLOAD_BYTES,
        )
        log = conf.parent / "nginx.log"
        with log.open("wb") as out:
            nginx = subprocess.Popen(nginx_local.command(conf), stdout=out, stderr=out)
        try:
            wait_until_answers(f"http://127.0.0.1:{port}", nginx, log)
            yield Proxied(api, port)
        finally:
            nginx.terminate()
            nginx.wait(20)


def upload_head(content_length: int) -> bytes:
    part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="d.npz"\r\n\r\n'
    return (
        f"POST /audits HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {content_length}\r\n\r\n{part}"
    ).encode()


def test_an_upload_goes_through(
    proxied: Proxied, small_fashion: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    path = tmp_path / "small.npz"
    write_npz(path, *small_fashion)
    with path.open("rb") as file:
        answer = httpx.post(f"{proxied.url}/audits", files={"file": file}, timeout=60)
    assert answer.status_code == 202, answer.text
    assert httpx.get(f"{proxied.url}{answer.headers['location']}", timeout=10).status_code == 200


def test_an_upload_streams_to_the_api_as_it_arrives(proxied: Proxied) -> None:
    """nginx does not hold the body back until it is whole (proxy_request_buffering off)."""
    with connect(proxied.port) as sock:
        sock.sendall(upload_head(50 * MB) + bytes(2**18))  # 256 KiB of 50 MB
        assert until(lambda: len(proxied.spooled()) == 1), "the API received nothing yet"
    assert until(lambda: not proxied.spooled()), proxied.spooled()


def test_a_body_over_max_upload_bytes_is_refused_by_the_proxy(proxied: Proxied) -> None:
    with connect(proxied.port) as sock:
        sock.sendall(upload_head(MAX_UPLOAD_BYTES + MB))
        status, body = read_response(sock)
    assert status == 413
    assert f"the limit of {MAX_UPLOAD_BYTES} bytes" in body.decode()
    assert not proxied.spooled()


def test_an_endless_head_is_answered_400_by_the_proxy(proxied: Proxied) -> None:
    """A header line over nginx's buffer is answered at once; what follows, nginx reads and
    drops until it closes (its lingering close), holding no more than the buffer."""
    with connect(proxied.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = 0
        while not closed_by_server(sock) and sent < 16 * MB:
            sock.sendall(b"a" * 2**16)
            sent += 2**16
        assert sent < 4 * MB
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")


def test_requests_in_progress_are_capped_per_address(proxied: Proxied) -> None:
    uploads = [connect(proxied.port) for _ in range(PER_ADDRESS)]
    try:
        for sock in uploads:
            sock.sendall(upload_head(50 * MB) + bytes(1024))
        assert until(lambda: len(proxied.spooled()) == PER_ADDRESS), len(proxied.spooled())
        with connect(proxied.port) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[0] == 429
    finally:
        for sock in uploads:
            sock.close()
    assert until(lambda: not proxied.spooled()), proxied.spooled()
    with connect(proxied.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert until_closed(sock, 10).startswith(b"HTTP/1.1 200")
