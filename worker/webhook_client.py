"""One webhook POST: to the address that was checked, within one deadline for the whole attempt.

httpx's timeouts apply to each read and write, so a receiver that sends a byte every few seconds
would hold a worker as long as it likes; here every network operation gets only what is left of
the attempt's deadline, name resolution included (a tenant's DNS server can be slow on purpose).
The connection goes to the resolved address that ``app.callback_urls`` allowed, never to a second
lookup's answer, while the request keeps the name: the Host header, TLS SNI and the certificate's
check are on the name. Redirects are not followed, and proxy variables are ignored (a proxy would
connect to the name itself).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from app.callback_urls import AddressRefused, IPAddress, IPNetwork, literal_address, pick

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Attempt:
    delivered: bool
    detail: str  # for the operators' log only: never shown to the tenant


def post(
    url: str, body: bytes, headers: dict[str, str], *, allowed: Sequence[IPNetwork],
    deadline_s: float,
) -> Attempt:  # fmt: skip
    deadline = time.monotonic() + deadline_s
    try:
        parsed = httpx.URL(url)
        port = parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 0)
        address = pick(_resolve(parsed.host, port, deadline), allowed)
    except AddressRefused as exc:
        return Attempt(False, f"refused: {exc}")
    except (OSError, ValueError, httpx.InvalidURL) as exc:  # ValueError: e.g. an IDNA error
        return Attempt(False, f"could not resolve the host: {type(exc).__name__}: {exc}")
    transport = PinnedTransport(str(address), deadline)
    # Each operation may take what is left of the deadline (the backend cuts it there).
    with httpx.Client(
        transport=transport, timeout=deadline_s, follow_redirects=False, trust_env=False
    ) as client:
        try:
            with client.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code  # the body is not read: only the status counts
        except httpx.HTTPError as exc:
            return Attempt(False, f"{address}: {type(exc).__name__}: {exc}"[:500])
    if response.is_success:
        return Attempt(True, f"{address}: answered {status}")
    return Attempt(False, f"{address}: answered {status}")


def _resolve(host: str, port: int, deadline: float) -> list[IPAddress]:
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    answers = _before(deadline, lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    return [a for a in (literal_address(str(info[4][0])) for info in answers) if a is not None]


def _before(deadline: float, call: Callable[[], Any]) -> Any:
    """``call()``'s result, or TimeoutError at the deadline; getaddrinfo takes no timeout, so it
    runs in a thread left to finish on its own."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="webhook-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    if not result:
        raise TimeoutError("name resolution ran past the attempt's deadline")
    return result[0]


class PinnedTransport(httpx.HTTPTransport):
    """httpx's transport with a network backend that connects to ``address`` whatever the URL's
    host, and cuts every operation at ``deadline`` (time.monotonic())."""

    def __init__(self, address: str, deadline: float) -> None:
        # httpx's own verification (certifi's CAs, or SSL_CERT_FILE's when set).
        ssl_context = httpx.create_ssl_context()
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx takes no network backend; its pool does.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=1,
            network_backend=_PinnedBackend(address, deadline),
        )


def _left(deadline: float, timeout: float | None, error: type[Exception]) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise error("past the webhook attempt's deadline")
    return remaining if timeout is None else min(timeout, remaining)


class _PinnedBackend(httpcore.NetworkBackend):
    def __init__(self, address: str, deadline: float) -> None:
        self._address, self._deadline = address, deadline
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,
        local_address: str | None = None, socket_options: Any = None,
    ) -> httpcore.NetworkStream:  # fmt: skip
        stream = self._backend.connect_tcp(
            self._address, port, _left(self._deadline, timeout, httpcore.ConnectTimeout),
            local_address, socket_options,
        )  # fmt: skip
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks go over TCP only")

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, max(0.0, self._deadline - time.monotonic())))


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream, self._deadline = stream, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(self._deadline, timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = _left(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, left), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)
