"""The whole service on real parts: PostgreSQL, Redis, and a Celery worker process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.queue import QUEUE, WEBHOOK_QUEUE
from app.settings import Settings
from dataset_audit.client import API_KEY_ENV, AuditClient

WORKER_START_S = 90
# The tests' webhook receivers listen on loopback, which deliveries refuse unless allowed.
LOOPBACK = "127.0.0.1/32"


@pytest.fixture(scope="session")
def service_settings(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("service"),
        database_url=postgres_url,
        broker_url=redis_url,
        progress_interval_s=0.2,
        worker_device="cpu",
        webhook_retry_base_s=0.5,
        webhook_allowed_networks=LOOPBACK,
    )


def service_env(settings: Settings) -> dict[str, str]:
    """The environment of the service's processes: the same settings the tests use."""
    return {
        **os.environ,
        "DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": settings.resolved_database_url,
        "BROKER_URL": settings.resolved_broker_url,
        "PROGRESS_INTERVAL_S": str(settings.progress_interval_s),
        "WORKER_DEVICE": settings.worker_device,
        "WEBHOOK_RETRY_BASE_S": str(settings.webhook_retry_base_s),
        "WEBHOOK_ALLOWED_NETWORKS": settings.webhook_allowed_networks,
    }


@pytest.fixture(scope="session")
def celery_worker(service_settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker process, as ``dataset-audit serve`` runs it: audits and webhooks."""
    log_path = service_settings.data_dir / "worker.log"
    env = service_env(service_settings)
    command = [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "--pool=solo", "--loglevel=INFO", "--hostname", f"test.{os.getpid()}@localhost",
        "-Q", f"{QUEUE},{WEBHOOK_QUEUE}",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        worker = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + WORKER_START_S
    while b" ready." not in log_path.read_bytes():
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            pytest.fail(f"the Celery worker did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    yield worker
    worker.terminate()
    try:
        worker.wait(20)
    except subprocess.TimeoutExpired:
        worker.kill()


@pytest.fixture
def service(
    service_settings: Settings, celery_worker: subprocess.Popen[bytes]
) -> Iterator[TestClient]:
    with TestClient(create_app(service_settings)) as client:
        yield client


@pytest.fixture(scope="session")
def service_url(
    service_settings: Settings, celery_worker: subprocess.Popen[bytes]
) -> Iterator[str]:
    """The API as deployed, a uvicorn process on PostgreSQL and Redis, with the worker above."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = service_settings.data_dir / "api.log"
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    with log_path.open("wb") as log:
        api = subprocess.Popen(
            command, env=service_env(service_settings), stdout=log, stderr=subprocess.STDOUT
        )
    wait_until_up(url, api, log_path)
    yield url
    api.terminate()
    api.wait(20)


@pytest.fixture(scope="session")
def embedded_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dataset-audit serve``, as a new user runs it: SQLite, no broker server."""
    data_dir = tmp_path_factory.mktemp("embedded")
    url, process = start_serve(data_dir)
    yield url
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("dataset-audit serve did not stop on SIGINT")
    assert (data_dir / "audits.sqlite").exists()
    assert (data_dir / "broker.sqlite").exists()


def start_serve(data_dir: Path, *options: str, **env: str) -> tuple[str, subprocess.Popen[bytes]]:
    """``dataset-audit serve --data-dir DATA_DIR OPTIONS`` as a new user runs it (no server URLs
    from this environment), up and with its worker ready; its URL and process."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    own_env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "AUTH", API_KEY_ENV)
    }
    own_env.update({"PROGRESS_INTERVAL_S": "0.2", "WORKER_DEVICE": "cpu", **env})
    log_path = data_dir / "serve.log"
    command = [
        sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
        *options,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=own_env, stdout=log, stderr=subprocess.STDOUT)
    wait_until_up(url, process, log_path, worker=True)
    return url, process


def children(pid: int) -> list[int]:
    """The PIDs of a process's children."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running, neither gone nor a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_checkpointed(client: AuditClient, audit_id: uuid.UUID, timeout: float = 120) -> None:
    """Until the audit runs with a weak learner or more in its checkpoint."""
    deadline = time.monotonic() + timeout
    while True:
        audit = client.get(audit_id)
        stage, done = audit.progress.stage, audit.progress.done
        if audit.status == "running" and (
            stage in ("voting", "refinement") or (stage == "clustering" and done >= 1)
        ):
            return
        assert audit.status in ("queued", "running"), audit
        assert time.monotonic() < deadline, f"not checkpointed after {timeout} s: {audit}"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(
    url: str, process: subprocess.Popen[bytes], log_path: Path, *, worker: bool = False
) -> None:
    deadline = time.monotonic() + WORKER_START_S
    while (worker and b" ready." not in log_path.read_bytes()) or not _ready(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{url} did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
