"""Real webhook receivers for tests: HTTP servers on loopback addresses, in threads."""

from __future__ import annotations

import http.server
import itertools
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """What reached one server: requests, and every TCP connection accepted."""

    host: str
    port: int
    scheme: str = "http"
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    server_names: list[str | None] = field(default_factory=list)  # TLS SNI, over TLS

    def url(self, path: str = "/hooks/audit", *, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"


class _Handler(http.server.BaseHTTPRequestHandler):
    receiver: Receiver
    status: int

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.receiver.requests.append(Received(dict(self.headers), body))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], receiver: Receiver, **kwargs: Any) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.receiver = receiver
        super().__init__(address, **kwargs)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, peer = super().get_request()
        self.receiver.connections += 1
        return connection, peer


@contextmanager
def receiving(
    host: str = "127.0.0.1", port: int = 0, *, status: int = 204,
    tls: ssl.SSLContext | None = None,
) -> Iterator[Receiver]:  # fmt: skip
    """An HTTP(S) server answering ``status`` to every POST."""
    receiver = Receiver(host, port)
    handler = type("Handler", (_Handler,), {"receiver": receiver, "status": status})
    server = _Server((host, port), receiver, RequestHandlerClass=handler)
    receiver.port = server.server_address[1]
    if tls is not None:
        receiver.scheme = "https"

        def note_server_name(_socket: Any, name: str | None, _context: Any) -> None:
            receiver.server_names.append(name)

        tls.sni_callback = note_server_name
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Stall:
    """A receiver that reads the request, then answers one byte every ``every_s`` for ever."""

    port: int
    opened: list[float] = field(default_factory=list)
    closed: list[float] = field(default_factory=list)


@contextmanager
def stalling(host: str = "127.0.0.1", every_s: float = 1.0) -> Iterator[Stall]:
    listener = socket.create_server((host, 0))
    stall = Stall(listener.getsockname()[1])
    stop = threading.Event()

    def drip(connection: socket.socket) -> None:
        with connection:
            stall.opened.append(time.monotonic())
            connection.recv(65536)
            answer = itertools.chain(b"HTTP/1.1 200 OK\r\nX-Stall: ", itertools.repeat(ord("a")))
            try:
                for byte in answer:
                    connection.sendall(bytes([byte]))
                    # Until the next byte is due: the client closing ends it at once, so that
                    # ``closed`` says when the client let go.
                    readable, _, _ = select.select([connection], [], [], every_s)
                    if stop.is_set() or (readable and connection.recv(65536) == b""):
                        break
            except OSError:
                pass
            stall.closed.append(time.monotonic())

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=drip, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield stall
    finally:
        stop.set()
        thread.join(5)
        listener.close()
