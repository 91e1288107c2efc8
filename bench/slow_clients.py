"""Slow-client benchmark: what unfinished requests cost ``dataset-audit serve`` before any key is
checked.

It starts ``dataset-audit serve`` on a free port and a throwaway data directory (the embedded
SQLite database and broker; the HTTP limits as the environment sets them, e.g.
``HTTP_HEADER_TIMEOUT_S``), then:

1. opens ``--connections`` connections that each send half a request header and stop, and
   measures ``GET /healthz`` from a normal client while they are open (latency and statuses);
2. watches them until the server has closed them, or ``--observe-s`` have passed: the time each
   one stayed open after its half header, at 50 %, 99 % and 100 % of them;
3. sends four headers of ``--header-mb`` MB that never end, and compares the API process's
   resident memory before and after (and how much of each the server took before closing it).

The process's open-file limit is raised as far as it may go (the server inherits it); the table
says when fewer connections could be opened than asked.

    python bench/slow_clients.py
    HTTP_HEADER_TIMEOUT_S=5 python bench/slow_clients.py --connections 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from common import free_port, server_errors

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 120.0
OPENING_AT_ONCE = 100  # connection attempts in flight, under the listen backlog
HALF_HEADER = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow-cl"
BIG_HEADERS = 4
CHUNK = 2**20
SEND_TIMEOUT_S = 30.0
MB = 1e6


@dataclass(frozen=True)
class Serve:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def rss_mb(self) -> float:
        """The API process's resident memory (``serve`` runs uvicorn in its own process)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / MB
        raise KeyError("VmRSS")


@contextlib.contextmanager
def running_serve(data_dir: Path) -> Iterator[Serve]:
    """``dataset-audit serve`` as a new user runs it, up with its worker ready."""
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "AUTH")
    }
    env["WORKER_DEVICE"] = "cpu"
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port),
               "--data-dir", str(data_dir)]  # fmt: skip
    log = data_dir / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
    serve = Serve(process, "127.0.0.1", port, log)
    try:
        wait_ready(serve)
        yield serve
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(serve: Serve) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and serve.process.poll() is None:
        # The worker's start (it imports torch) would otherwise share the measurements' CPU.
        if b" ready." in serve.log.read_bytes():
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{serve.url}/healthz", timeout=1.0).status_code == 200:
                    return
        time.sleep(0.2)
    raise SystemExit(f"dataset-audit serve did not start:\n{serve.log.read_text()[-3000:]}")


def raise_open_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# 1 and 2. Half headers.


@dataclass
class SlowClient:
    writer: asyncio.StreamWriter
    closed: asyncio.Task[float]  # seconds from the half header to the server's close


async def open_slow_client(serve: Serve, gate: asyncio.Semaphore) -> SlowClient:
    async with gate:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(serve.host, serve.port), timeout=10
        )
    writer.write(HALF_HEADER)
    await writer.drain()
    sent = time.monotonic()

    async def closed() -> float:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):  # whatever the server answers, up to its close
                pass
        return time.monotonic() - sent

    return SlowClient(writer, asyncio.create_task(closed()))


async def healthz_latencies(serve: Serve, requests: int) -> tuple[list[float], Counter[str]]:
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=serve.url, timeout=5.0) as client:
        for _ in range(requests):
            start = time.perf_counter()
            try:
                response = await client.get("/healthz")
                outcomes[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1
            latencies.append((time.perf_counter() - start) * 1000)
    return latencies, outcomes


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def half_headers(serve: Serve, args: argparse.Namespace) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    idle_mb = serve.rss_mb()
    gate = asyncio.Semaphore(OPENING_AT_ONCE)
    started = time.monotonic()
    results = await asyncio.gather(
        *(open_slow_client(serve, gate) for _ in range(args.connections)), return_exceptions=True
    )
    clients = [r for r in results if isinstance(r, SlowClient)]
    failures = Counter(type(r).__name__ for r in results if isinstance(r, BaseException))
    opened = f"{len(clients)} of {args.connections} in {time.monotonic() - started:.1f} s"
    rows.append(("half-header connections opened", opened))
    if failures:
        rows.append(("  could not open", ", ".join(f"{n} {k}" for k, n in failures.items())))
    rows.append(("API RSS idle / with them open", f"{idle_mb:.0f} / {serve.rss_mb():.0f} MB"))

    latencies, outcomes = await healthz_latencies(serve, args.healthz)
    statuses = ", ".join(f"{n} x {k}" for k, n in sorted(outcomes.items()))
    rows.append((f"/healthz meanwhile ({args.healthz} requests)", statuses))
    rows.append(("  p50 / p99 / max", f"{statistics.median(latencies):.1f} / "
                 f"{quantile(latencies, 0.99):.1f} / {max(latencies):.1f} ms"))  # fmt: skip

    tasks = [client.closed for client in clients]
    await asyncio.wait(tasks, timeout=max(0.0, args.observe_s - (time.monotonic() - started)))
    times = sorted(task.result() for task in tasks if task.done())
    for task in tasks:
        task.cancel()
    for client in clients:
        client.writer.close()
    for share in (0.5, 0.99, 1.0):
        needed = max(1, round(share * len(clients)))
        value = f"{times[needed - 1]:.1f} s" if len(times) >= needed else "not yet"
        rows.append((f"  {share:.0%} closed by the server after", value))
    if len(times) < len(clients):
        rows.append(("  still open after", f"{args.observe_s:.0f} s: {len(clients) - len(times)}"))
    await asyncio.sleep(1.0)  # the server notices the clients' closes
    _, outcomes = await healthz_latencies(serve, 20)
    statuses = ", ".join(f"{n} x {k}" for k, n in sorted(outcomes.items()))
    rows.append(("/healthz once they are gone (20)", statuses))
    return rows


# 3. Headers that never end.


@dataclass(frozen=True)
class BigHeader:
    sent: int  # bytes written before the server stopped taking them
    closed: bool  # whether the server closed the connection
    writer: asyncio.StreamWriter


async def big_header(serve: Serve, size: int) -> BigHeader:
    """A header line of ``size`` bytes that never ends."""
    reader, writer = await asyncio.open_connection(serve.host, serve.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
    sent = 0
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(SEND_TIMEOUT_S):
            while sent < size:
                chunk = min(CHUNK, size - sent)
                writer.write(b"a" * chunk)
                await writer.drain()
                sent += chunk
    closed = True
    try:
        async with asyncio.timeout(2.0):
            while await reader.read(65536):
                pass
    except ConnectionError:
        pass
    except TimeoutError:
        closed = False
    return BigHeader(sent, closed, writer)


async def unfinished_headers(serve: Serve, args: argparse.Namespace) -> list[tuple[str, str]]:
    before = serve.rss_mb()
    size = int(args.header_mb * MB)
    results = await asyncio.gather(*(big_header(serve, size) for _ in range(BIG_HEADERS)))
    await asyncio.sleep(1.0)
    after = serve.rss_mb()
    for result in results:
        result.writer.close()
    sent = " / ".join(f"{r.sent / MB:.1f}" for r in results)
    return [
        (f"{BIG_HEADERS} unfinished {args.header_mb:g} MB headers: sent", f"{sent} MB"),
        ("  closed by the server", f"{sum(r.closed for r in results)} of {BIG_HEADERS}"),
        ("  API RSS before / after", f"{before:.0f} / {after:.0f} MB (+{after - before:.0f})"),
    ]


async def measure(serve: Serve, args: argparse.Namespace) -> list[tuple[str, str]]:
    rows = await half_headers(serve, args)
    return rows + await unfinished_headers(serve, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--healthz", type=int, default=200, help="requests to /healthz")
    parser.add_argument("--observe-s", type=float, default=40.0)
    parser.add_argument("--header-mb", type=float, default=16.0)
    args = parser.parse_args()
    limit = raise_open_file_limit()
    rows = [("open-file limit (client and server)", str(limit))]
    if limit < args.connections + 100:
        rows.append(("  too low for", f"{args.connections} connections: fewer will open"))
    with (
        tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp,
        running_serve(Path(tmp)) as serve,
    ):
        rows += asyncio.run(measure(serve, args))
        errors = server_errors(serve.log)
    width = max(len(name) for name, _ in rows)
    print(f"dataset-audit serve under slow clients ({' '.join(sys.argv[1:]) or 'defaults'})")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if errors:
        print("server errors:", *errors, sep="\n  ")


if __name__ == "__main__":
    main()
