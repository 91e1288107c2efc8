"""A tenant's slow webhook receiver does not hold up another tenant's audit: deliveries run on
their own queue and worker pool, as deployed (an audits worker with ``-Q audits``, a webhooks
worker with ``-Q webhooks --pool=threads``), and each attempt is cut at WEBHOOK_TIMEOUT_S in
all, however slowly the receiver drips its answer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from app.db import make_engine, make_sessionmaker, transaction
from app.main import create_app
from app.queue import QUEUE, WEBHOOK_QUEUE
from app.services import access
from app.settings import Settings, get_settings
from tests.app.webhook_receivers import stalling
from tests.dataset_files import write_npz
from tests.e2e.conftest import WORKER_START_S

BROKER_DB = "redis://127.0.0.1:6379/13"  # a Redis database no other test's worker reads
DEADLINE_S = 8.0
# Retried at once, many times: A's receiver stalls the deliveries for minutes, longer than B's
# audit takes even on a busy machine.
ATTEMPTS = 60


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Settings:
    client = redis.Redis.from_url(BROKER_DB)
    client.flushdb()
    client.close()
    return Settings(
        data_dir=tmp_path_factory.mktemp("isolation"),
        database_url=postgres_url,
        broker_url=BROKER_DB,
        progress_interval_s=0.2,
        worker_device="cpu",
        auth=True,
        auth_cache_s=0,
        reconcile_interval_s=0,  # the session's other audits are none of this API's business
        webhook_allowed_networks="127.0.0.1/32",
        webhook_timeout_s=DEADLINE_S,
        webhook_max_attempts=ATTEMPTS,
        webhook_retry_base_s=0.0,
    )


def start_worker(settings: Settings, name: str, *options: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": settings.resolved_database_url,
        "BROKER_URL": settings.resolved_broker_url,
        "PROGRESS_INTERVAL_S": str(settings.progress_interval_s),
        "WORKER_DEVICE": settings.worker_device,
        "WEBHOOK_ALLOWED_NETWORKS": settings.webhook_allowed_networks,
        "WEBHOOK_TIMEOUT_S": str(settings.webhook_timeout_s),
        "WEBHOOK_MAX_ATTEMPTS": str(settings.webhook_max_attempts),
        "WEBHOOK_RETRY_BASE_S": str(settings.webhook_retry_base_s),
    }
    log_path = settings.data_dir / f"{name}.log"
    command = [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel=INFO",
        "--hostname", f"{name}.{os.getpid()}@localhost", *options,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + WORKER_START_S
    while b" ready." not in log_path.read_bytes():
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.2)
    return process


@pytest.fixture(scope="module")
def workers(settings: Settings) -> Iterator[None]:
    processes = [
        start_worker(settings, "audits", "-Q", QUEUE, "--pool=solo"),
        start_worker(settings, "webhooks", "-Q", WEBHOOK_QUEUE, "--pool=threads",
                     "--concurrency=2"),
    ]  # fmt: skip
    yield
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def api(settings: Settings, workers: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    # The upload's check reads the process's settings: the same allowance as the app's.
    monkeypatch.setenv("WEBHOOK_ALLOWED_NETWORKS", settings.webhook_allowed_networks)
    get_settings.cache_clear()
    with TestClient(create_app(settings)) as client:
        yield client
    get_settings.cache_clear()


def bearer_for(settings: Settings, tenant: str) -> dict[str, str]:
    engine = make_engine(settings.resolved_database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return {"Authorization": f"Bearer {access.create_key(session, tenant)[1]}"}
    finally:
        engine.dispose()


def submit(api: TestClient, path: Path, headers: dict[str, str], **fields: str) -> uuid.UUID:
    with path.open("rb") as file:
        response = api.post(
            "/audits",
            files={"file": (path.name, file)},
            data={"preset": "tiny", "reuse": "false", **fields},
            headers=headers,
        )
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.2)
    return found


def monotonic_of(timestamp: str) -> float:
    """An API timestamp on this process's monotonic clock (the receiver's)."""
    wall = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    return wall - (time.time() - time.monotonic())


def audit(api: TestClient, audit_id: uuid.UUID, headers: dict[str, str]) -> dict[str, Any]:
    answer: dict[str, Any] = api.get(f"/audits/{audit_id}", headers=headers).json()
    return answer


@pytest.mark.slow
def test_a_stalling_receiver_is_cut_and_holds_up_no_other_tenants_audit(
    api: TestClient, settings: Settings, small_fashion: Any, tmp_path: Path
) -> None:
    path = tmp_path / "d.npz"
    write_npz(path, *small_fashion)
    tenant_a, tenant_b = bearer_for(settings, "tenant-a"), bearer_for(settings, "tenant-b")
    with stalling("127.0.0.1", every_s=0.5) as stall:
        a = submit(api, path, tenant_a, callback_url=f"http://127.0.0.1:{stall.port}/hook")
        wait_until(lambda: audit(api, a, tenant_a)["status"] == "succeeded", 300, "A's audit")
        wait_until(lambda: stall.opened, 30, "A's webhook")

        b = submit(api, path, tenant_b, seed="1")
        b_audit = wait_until(
            lambda: (found := audit(api, b, tenant_b))["status"] == "succeeded" and found,
            300, "B's audit",
        )  # fmt: skip
        b_done = time.monotonic()
        # A's deliveries were under way before B was submitted, and still are after it ended.
        wait_until(lambda: stall.opened[-1] > b_done, DEADLINE_S + 10, "A's next attempt")
        shown = audit(api, a, tenant_a)["webhook"]
        assert api.delete(f"/audits/{a}", headers=tenant_a).status_code == 204  # ends them
        # Each connection the worker closed (not the last, which this receiver's end closes).
        held = [c - o for o, c in zip(stall.opened, stall.closed, strict=False)]
    assert held, stall
    # B was submitted while A's first attempt held its connection, and started before that
    # attempt was cut: a worker shared by both queues would have taken B only after it.
    assert stall.opened[0] < monotonic_of(b_audit["started_at"]) < stall.closed[0], stall
    assert all(DEADLINE_S - 0.5 <= s <= DEADLINE_S + 1.5 for s in held), held  # whole attempts

    assert shown["state"] == "pending"  # still trying, up to WEBHOOK_MAX_ATTEMPTS
    deliveries = [(d["delivered"], d["status_code"], d["error"]) for d in shown["deliveries"]]
    assert deliveries == [(False, None, None)] * len(deliveries)
    assert len(deliveries) >= 1
    assert audit(api, b, tenant_b)["webhook"] is None
    log = (settings.data_dir / "webhooks.log").read_text()
    assert f"webhook attempt 1 of {ATTEMPTS} failed" in log
    assert "Timeout" in log  # the operators see why; the tenant does not
