"""The whole service on real parts: PostgreSQL, Redis, and a Celery worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

WORKER_START_S = 90


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
    )


@pytest.fixture(scope="session")
def celery_worker(service_settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker process, as deployed: ``celery -A worker.celery_app worker``."""
    log_path = service_settings.data_dir / "worker.log"
    env = {
        **os.environ,
        "DATA_DIR": str(service_settings.data_dir),
        "DATABASE_URL": service_settings.resolved_database_url,
        "BROKER_URL": service_settings.resolved_broker_url,
        "PROGRESS_INTERVAL_S": "0.2",
        "WORKER_DEVICE": "cpu",
    }
    command = [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "--pool=solo", "--loglevel=INFO", "--hostname", f"test.{os.getpid()}@localhost",
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


def worker_log(settings: Settings) -> str:
    return Path(settings.data_dir / "worker.log").read_text()[-3000:]
