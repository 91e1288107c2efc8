"""Private Redis and PostgreSQL servers for fault tests: started on a free port, killed by their
own PIDs, and started again on the same port and data."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis
from fastapi.testclient import TestClient

from tests.e2e.conftest import free_port

POSTGRES_BIN = Path("/usr/lib/postgresql") / (
    sorted(os.listdir("/usr/lib/postgresql"))[-1] if Path("/usr/lib/postgresql").exists() else ""
) / "bin"  # fmt: skip
START_S = 30.0


class RedisServer:
    """``redis-server`` without persistence, like the broker this machine runs: a restart
    comes back empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_S
        while True:
            try:
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


class PostgresServer:
    """A PostgreSQL cluster of its own (``initdb`` as the postgres user, trust auth)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dataset-audit-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(
            str(POSTGRES_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--no-sync",
        )  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True
        )

    @property
    def pid(self) -> int:
        """The postmaster's own PID (``runuser`` stands between it and us)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def start(self) -> None:
        deadline = time.monotonic() + START_S
        while True:  # after a kill, the old backends take a moment to notice and exit
            self.process = subprocess.Popen(
                ["runuser", "-u", "postgres", "--", str(POSTGRES_BIN / "postgres"),
                 "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if self._wait_ready(deadline):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not start")
            time.sleep(0.5)

    def _wait_ready(self, deadline: float) -> bool:
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            ready = subprocess.run(
                [str(POSTGRES_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.2)
        return False

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.pid, signal.SIGQUIT)
            self.process.wait(30)
        shutil.rmtree(self.root, ignore_errors=True)


def wait_for(client: httpx.Client | TestClient, url: str, predicate, timeout: float = 120.0):
    """Poll ``url`` until ``predicate(json)``; the last JSON."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(url).json()
        if predicate(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting on {url}: {body}")
        time.sleep(0.1)


def until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Whether ``condition`` came true within ``seconds`` (polled every 50 ms)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
