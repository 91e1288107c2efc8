"""uvicorn's h11 protocol with limits on a connection before its request reaches the app.

uvicorn closes a keep-alive connection that stays idle after a response, but arms no timer before
a request's headers are in: a client that opens a connection and sends half a header holds it
for good. Its default parser, httptools, also buffers a header of any size until the header ends.
This protocol:

- closes a connection whose request line and headers are not all in ``HTTP_HEADER_TIMEOUT_S``
  after it opened, or after the first byte of the next request on a keep-alive connection;
- buffers at most ``MAX_HEADER_BYTES`` plus room for the request line of an unfinished request
  head (h11's bound, checked as the bytes arrive), and answers 431 past it;
- closes idle keep-alive connections after ``HTTP_KEEP_ALIVE_S`` and answers 503 to requests
  while ``HTTP_MAX_CONNECTIONS`` connections are open (uvicorn's own two limits).

The limits come from the settings, whatever uvicorn's options say, so ``dataset-audit serve`` and
``uvicorn app.main:app --http app.http_limits:LimitedH11Protocol`` apply the same ones.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from app.settings import get_settings

# Room for the request line beside the headers that MAX_HEADER_BYTES counts: nginx's default
# bound on a request line.
REQUEST_LINE_BYTES = 8 * 2**10


class LimitedH11Protocol(H11Protocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.max_head_bytes = settings.max_header_bytes + REQUEST_LINE_BYTES
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head_bytes)
        self.timeout_keep_alive = settings.http_keep_alive_s
        self.limit_concurrency = settings.http_max_connections
        self.header_timeout_s = settings.http_header_timeout_s
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        # h11 is IDLE on the client's side until a request's head is complete.
        if self.header_timer is None and self.conn.their_state is h11.IDLE:
            self._start_header_timer()  # the first bytes of a keep-alive connection's next request
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._stop_header_timer()  # the head is in, or was refused

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # h11 refuses a head over its bound as it refuses a malformed one: tell them apart.
        if len(self.conn.trailing_data[0]) <= self.max_head_bytes:
            super().send_400_response(msg)
            return
        detail = f"the request line and headers take more than {self.max_head_bytes} bytes"
        body = json.dumps({"detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        response = h11.Response(status_code=431, headers=headers)
        for event in (response, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def _start_header_timer(self) -> None:
        self.header_timer = self.loop.call_later(self.header_timeout_s, self._header_timed_out)

    def _header_timed_out(self) -> None:
        self.header_timer = None
        self.timeout_keep_alive_handler()  # closes the connection as an idle one is closed

    def _stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
