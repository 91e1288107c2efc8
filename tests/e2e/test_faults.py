"""Faults on real processes, each killed by its own PID: a Celery worker (SIGKILL mid-audit, and
SIGSTOP past the heartbeat timeout), Redis (killed and restarted empty) and PostgreSQL (killed
and restarted). Nothing is lost, nothing is stuck, and no audit ends with two results.

The database is a PostgreSQL cluster of this module's own, so that no other test's worker or
reconciler touches these audits."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from incompat import detect
from tests.conftest import empty_tables
from tests.dataset_files import write_npz
from tests.e2e.conftest import WORKER_START_S, service_env
from tests.e2e.servers import PostgresServer, RedisServer, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 and not os.access("/usr/sbin/runuser", os.X_OK),
    reason="a private PostgreSQL cluster needs initdb as the postgres user",
)
BROKER_DB = "redis://127.0.0.1:6379/14"  # a Redis database no other test's worker reads
HEARTBEAT_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    upgrade(server.url)
    yield server
    server.stop()


@pytest.fixture
def settings(postgres: PostgresServer, tmp_path: Path) -> Settings:
    empty_tables(postgres.url)
    client = redis.Redis.from_url(BROKER_DB)
    client.flushdb()
    client.close()
    return Settings(
        data_dir=tmp_path / "service",
        database_url=postgres.url,
        broker_url=BROKER_DB,
        progress_interval_s=0.1,
        worker_device="cpu",
        heartbeat_interval_s=0.3,
        heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
        reconcile_interval_s=0.5,
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    """The API in this process, with its reconciler."""
    with TestClient(create_app(settings)) as client:
        yield client


class Workers:
    """Celery worker processes, as deployed, each with a log of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log_path = self.log_path(len(self.processes))
        env = {
            **service_env(self.settings),
            "HEARTBEAT_INTERVAL_S": str(self.settings.heartbeat_interval_s),
            "HEARTBEAT_TIMEOUT_S": str(self.settings.heartbeat_timeout_s),
        }
        command = [
            sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool=solo",
            "--loglevel=INFO", "--hostname", f"fault{len(self.processes)}.{os.getpid()}@localhost",
        ]  # fmt: skip
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        deadline = time.monotonic() + WORKER_START_S
        while b" ready." not in log_path.read_bytes():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        return process

    def log_path(self, number: int) -> Path:
        return self.settings.data_dir / f"worker{number}.log"

    def log(self, number: int) -> str:
        return self.log_path(number).read_text()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def workers(settings: Settings) -> Iterator[Workers]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    started = Workers(settings)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def dataset(small_fashion, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """600 Fashion-MNIST images, and the scores of an uninterrupted audit of them (tiny, seed 0)."""
    path = tmp_path_factory.mktemp("faults") / "fashion.npz"
    write_npz(path, *small_fashion)
    uninterrupted = detect(*small_fashion, config="tiny", seed=0, device="cpu")
    return path, uninterrupted.score


def submit(api: TestClient, path: Path, **fields: Any) -> str:
    with path.open("rb") as file:
        response = api.post(
            "/audits",
            files={"file": (path.name, file)},
            data={"preset": "tiny", "reuse": "false", **{k: str(v) for k, v in fields.items()}},
        )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def learners_done(audit: dict[str, Any]) -> bool:
    stage, done = audit["progress"]["stage"], audit["progress"]["done"]
    return audit["status"] == "running" and (
        stage in ("voting", "refinement") or (stage == "clustering" and done >= 1)
    )


def finished(audit: dict[str, Any]) -> bool:
    return audit["status"] in ("succeeded", "failed", "cancelled")


def scores(api: TestClient, audit_id: str) -> np.ndarray:
    response = api.get(f"/audits/{audit_id}/scores")
    assert response.status_code == 200, response.text
    return np.array(response.json()["scores"], dtype=np.float32)


def audit_in_progress(
    api: TestClient, workers: Workers, path: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """A worker, and the audit it is running with a learner or more in its checkpoint."""
    worker = workers.start()
    audit_id = submit(api, path)
    wait_for(api, f"/audits/{audit_id}", learners_done)
    return worker, audit_id


def test_a_worker_killed_mid_audit_is_replaced_and_the_audit_resumes(
    api: TestClient, workers: Workers, dataset: tuple[Path, np.ndarray]
) -> None:
    path, expected = dataset
    first, audit_id = audit_in_progress(api, workers, path)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert api.get(f"/audits/{audit_id}").json()["status"] == "running"  # as the worker left it

    workers.start()
    audit = wait_for(api, f"/audits/{audit_id}", finished)
    assert (audit["status"], audit["attempts"]) == ("succeeded", 2), audit
    resumed = re.search(r"resuming from a checkpoint of (\d+) weak learners", workers.log(1))
    assert resumed is not None, workers.log(1)[-3000:]
    assert int(resumed.group(1)) >= 1
    np.testing.assert_array_equal(scores(api, audit_id), expected)


def test_a_frozen_worker_loses_its_audit_by_heartbeat_timeout_and_cannot_overwrite_it(
    api: TestClient, workers: Workers, dataset: tuple[Path, np.ndarray]
) -> None:
    path, expected = dataset
    frozen, audit_id = audit_in_progress(api, workers, path)
    os.kill(frozen.pid, signal.SIGSTOP)  # alive, but silent: only the heartbeat tells
    workers.start()

    audit = wait_for(api, f"/audits/{audit_id}", finished)
    assert (audit["status"], audit["attempts"]) == ("succeeded", 2), audit
    os.kill(frozen.pid, signal.SIGCONT)  # it wakes up, finds the audit gone, and stops
    time.sleep(2 * HEARTBEAT_TIMEOUT_S)
    after = api.get(f"/audits/{audit_id}").json()
    assert (after["status"], after["finished_at"], after["attempts"]) == (
        "succeeded", audit["finished_at"], 2,
    )  # fmt: skip
    np.testing.assert_array_equal(scores(api, audit_id), expected)
    assert frozen.poll() is None  # the worker itself lives on for the next audit


def test_a_redis_restart_loses_no_audit(
    settings: Settings, dataset: tuple[Path, np.ndarray], tmp_path: Path, small_fashion
) -> None:
    broker = RedisServer()
    broker.start()
    settings = settings.model_copy(update={"broker_url": broker.url})
    workers = Workers(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(3):  # different content, so that each is an audit of its own
        paths.append(tmp_path / f"d{seed}.npz")
        images, labels = small_fashion
        write_npz(paths[-1], images[: 300 + 50 * seed], labels[: 300 + 50 * seed])
    try:
        with TestClient(create_app(settings)) as api:
            workers.start()
            ids = [submit(api, path) for path in paths]
            wait_for(api, f"/audits/{ids[0]}", lambda a: a["status"] == "running")
            broker.kill()  # the queued tasks, the running one's unacked copy, the sentinel: gone
            broker.start()
            audits = [wait_for(api, f"/audits/{i}", finished, timeout=180) for i in ids]
    finally:
        workers.stop()
        broker.stop()
    assert [(a["status"], a["attempts"]) for a in audits] == [("succeeded", 1)] * 3, audits


def test_a_postgres_outage_is_503_and_the_api_recovers_without_a_restart(
    api: TestClient, postgres: PostgresServer, settings: Settings, dataset: tuple[Path, np.ndarray]
) -> None:
    path, _ = dataset
    audit_id = submit(api, path)
    assert api.get("/audits").status_code == 200

    postgres.kill()
    for url in ("/audits", f"/audits/{audit_id}", f"/audits/{audit_id}/flagged"):
        response = api.get(url)
        assert response.status_code == 503, (url, response.text)
        assert "database is unavailable" in response.json()["detail"]
    with path.open("rb") as file:
        refused = api.post("/audits", files={"file": (path.name, file)})
    assert refused.status_code == 503
    assert api.get("/readyz").status_code == 503
    assert api.get("/healthz").status_code == 200  # the process itself is fine
    assert not any((settings.data_dir / "spool").glob("*"))

    postgres.start()
    deadline = time.monotonic() + 30
    while (response := api.get(f"/audits/{audit_id}")).status_code != 200:
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert response.json()["status"] == "queued"
    assert api.get("/audits").json()["total"] == 1  # the failed upload left no audit
    assert api.get("/readyz").status_code == 200
