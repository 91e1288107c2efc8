"""The limits a connection meets before its request reaches the app (app/http_limits.py), on the
API as its image runs it and on ``dataset-audit serve``: request heads that never end, trickle
in or grow without end, idle keep-alive connections, and more connections than the cap."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.raw_http import (
    MB,
    REQUEST,
    Api,
    closed_by_server,
    connect,
    read_response,
    running_api,
    send_until_refused,
    until_closed,
)

HEADER_TIMEOUT_S = 2.5
KEEP_ALIVE_S = 1
MAX_CONNECTIONS = 4
SLACK_S = 1.5  # for a busy machine's scheduling
HALF_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: half"
ENDLESS_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: "


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    env = {
        "HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "HTTP_KEEP_ALIVE_S": str(KEEP_ALIVE_S),
        "HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    with running_api(tmp_path_factory.mktemp("http-limits"), **env) as running:
        yield running


@pytest.mark.parametrize("sent", [b"", HALF_HEAD], ids=["nothing", "half a head"])
def test_a_head_that_never_ends_is_closed_at_the_header_timeout(api: Api, sent: bytes) -> None:
    with connect(api.port) as sock:
        opened = time.monotonic()
        sock.sendall(sent)
        assert until_closed(sock, HEADER_TIMEOUT_S + SLACK_S) == b""
        elapsed = time.monotonic() - opened
    assert elapsed > HEADER_TIMEOUT_S * 0.9


def test_a_head_trickling_in_is_closed_at_the_header_timeout_all_the_same(api: Api) -> None:
    """A byte every 50 ms would pass any timeout on each read; the head as a whole does not."""
    with connect(api.port) as sock:
        opened = time.monotonic()
        sock.sendall(ENDLESS_HEAD)
        while not closed_by_server(sock) and time.monotonic() - opened < 3 * HEADER_TIMEOUT_S:
            sock.sendall(b"a")
            time.sleep(0.05)
        elapsed = time.monotonic() - opened
        assert until_closed(sock, SLACK_S) == b""
    assert HEADER_TIMEOUT_S * 0.9 < elapsed < HEADER_TIMEOUT_S + SLACK_S


def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(api: Api) -> None:
    with connect(api.port) as sock:
        sock.sendall(REQUEST)
        assert read_response(sock)[0] == 200
        answered = time.monotonic()
        assert until_closed(sock, HEADER_TIMEOUT_S + SLACK_S) == b""
        elapsed = time.monotonic() - answered
    assert KEEP_ALIVE_S * 0.9 < elapsed < HEADER_TIMEOUT_S  # the keep-alive timeout, the shorter


def test_the_next_head_on_a_keep_alive_connection_has_the_header_timeout(api: Api) -> None:
    """Its first byte stops the keep-alive timer: the header timer takes over."""
    with connect(api.port) as sock:
        sock.sendall(REQUEST)
        assert read_response(sock)[0] == 200
        sock.sendall(HALF_HEAD)
        started = time.monotonic()
        assert until_closed(sock, HEADER_TIMEOUT_S + SLACK_S) == b""
        elapsed = time.monotonic() - started
    assert elapsed > HEADER_TIMEOUT_S * 0.9


def test_an_endless_head_is_refused_as_it_arrives(api: Api) -> None:
    """Closed long before 16 MB are in, and the process does not grow by them: the bound holds
    while the head is read, not once it is complete."""
    httpx.get(f"{api.url}/healthz", timeout=10)  # the first request's allocations are made
    before = api.rss()
    for _ in range(4):
        with connect(api.port) as sock:
            assert send_until_refused(sock, ENDLESS_HEAD, 16 * MB) < 8 * MB
    assert api.rss() - before < 8 * MB


@pytest.mark.parametrize(
    ("end", "detail"),
    [
        (b"", "the request line and headers take more than"),  # h11's bound, as it arrives
        (b"\r\n\r\n", "the request headers take"),  # in one read: the app's limit answers
    ],
    ids=["unfinished", "whole"],
)
def test_a_head_over_the_limit_is_answered_431(api: Api, end: bytes, detail: str) -> None:
    with connect(api.port) as sock:
        sock.sendall(ENDLESS_HEAD + b"a" * 50_000 + end)
        status, body = read_response(sock)
        assert until_closed(sock, SLACK_S) == b""
    assert status == 431
    assert json.loads(body)["detail"].startswith(detail)


def test_requests_past_the_connection_cap_are_answered_503(api: Api) -> None:
    assert wait_for_status(api.url, 200)  # the earlier tests' connections are gone
    idle = [connect(api.port) for _ in range(MAX_CONNECTIONS - 1)]
    try:
        time.sleep(0.3)  # until the server has accepted them
        with connect(api.port) as sock:  # the cap's connection: it counts too
            sock.sendall(REQUEST)
            assert read_response(sock)[0] == 503
    finally:
        for sock in idle:
            sock.close()
    assert wait_for_status(api.url, 200)


def test_serve_applies_the_limits(embedded_url: str) -> None:
    """``dataset-audit serve`` runs the same protocol: an endless head is refused as it arrives
    (httptools, uvicorn's default, would read all of it and never answer)."""
    port = urlsplit(embedded_url).port
    assert port is not None
    with connect(port) as sock:
        assert send_until_refused(sock, ENDLESS_HEAD, 16 * MB) < 8 * MB


def wait_for_status(url: str, status: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        with httpx.Client(timeout=5) as client:  # a new connection each time
            if client.get(f"{url}/healthz").status_code == status:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
