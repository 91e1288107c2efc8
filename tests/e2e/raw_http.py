"""Raw HTTP for the tests of the limits a connection meets before its request reaches the app:
sockets that misbehave on purpose, and the API as its image runs it (``uvicorn app.main:app
--http app.http_limits:LimitedH11Protocol``) with the settings a test chooses."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.migrate import upgrade
from tests.e2e.conftest import free_port

PROTOCOL = "app.http_limits:LimitedH11Protocol"
START_S = 60.0
MB = 2**20
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@dataclass(frozen=True)
class Api:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        """The process's resident memory, in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise KeyError("VmRSS")


@contextlib.contextmanager
def running_api(data_dir: Path, **env: str) -> Iterator[Api]:
    """The API on SQLite under ``data_dir``, without auth or reconciler, ``env`` added."""
    own_env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "AUTH")
    }
    own_env.update(DATA_DIR=str(data_dir), RECONCILE_INTERVAL_S="0", **env)
    upgrade(f"sqlite:///{data_dir / 'audits.sqlite'}")
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port),
               "--http", PROTOCOL]  # fmt: skip
    log = data_dir / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=own_env, stdout=out, stderr=subprocess.STDOUT)
    api = Api(process, port, data_dir)
    try:
        wait_until_answers(api.url, process, log)
        yield api
    finally:
        process.terminate()
        process.wait(20)


def wait_until_answers(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_S
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{url} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as a close);
    fails if it is still open after ``timeout`` seconds."""
    sock.settimeout(timeout)
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed the connection (or answered), without waiting."""
    return bool(select.select([sock], [], [], 0)[0])


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response with a Content-Length: its status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
    while len(body) < int(headers[b"content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split(b" ", 2)[1]), body


def send_until_refused(sock: socket.socket, head: bytes, size: int) -> int:
    """Sends ``head``, then ``size`` bytes more of it that never end it; the bytes of them sent
    before the server refused more (closed or reset the connection)."""
    sent = 0
    try:
        sock.sendall(head)
        while sent < size:
            chunk = min(64 * 2**10, size - sent)
            sock.sendall(b"a" * chunk)
            sent += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent
