"""The two-host deployment on real parts: an API process and two worker processes, each with a
data folder of its own and no filesystem in common, meeting only through PostgreSQL, Redis and an
S3 server (moto's, over HTTP). One audit's parts run on both workers; one worker is
killed in the middle of a bag, and the other resumes that bag from its checkpoint in the bucket.
``tiny`` has one bag and the probe: two parts for two workers.
The result equals the engine's serial run with the same seed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.migrate import upgrade
from app.queue import QUEUE
from app.tables import AuditPart
from incompat import detect
from tests import s3_server
from tests.conftest import S3_BUCKET
from tests.dataset_files import write_npz
from tests.e2e.conftest import free_port, wait_until_up
from tests.e2e.servers import PostgresServer, RedisServer, until

pytestmark = pytest.mark.slow


class Deployment:
    """Shared services, and the processes of the API host and the GPU hosts."""

    def __init__(self, root: Path, s3_endpoint: str) -> None:
        self.root = root
        self.postgres, self.redis = PostgresServer(), RedisServer()
        self.postgres.start()
        self.redis.start()
        upgrade(self.postgres.url)
        self.env = {
            **os.environ,
            "DATABASE_URL": self.postgres.url,
            "BROKER_URL": self.redis.url,
            "STORAGE_URL": f"s3://{S3_BUCKET}/multi-host-{uuid.uuid4().hex[:8]}",
            "STORAGE_ENDPOINT_URL": s3_endpoint,
            "STORAGE_KEY": s3_server.KEY,
            "STORAGE_SECRET": s3_server.SECRET,
            "STORAGE_REGION": s3_server.REGION,
            "WORKER_DEVICE": "cpu",
            "PROGRESS_INTERVAL_S": "0.2",
            # A killed worker's part is given to another within seconds.
            "HEARTBEAT_INTERVAL_S": "0.5",
            "HEARTBEAT_TIMEOUT_S": "3",
            "RECONCILE_INTERVAL_S": "1",
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def host(self, name: str) -> dict[str, str]:
        data_dir = self.root / name
        data_dir.mkdir()
        return {**self.env, "DATA_DIR": str(data_dir)}

    def start_api(self) -> str:
        port = free_port()
        log = self.root / "api.log"
        command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
        with log.open("wb") as out:
            api = subprocess.Popen(command, env=self.host("api"), stdout=out, stderr=out)
        self.processes.append(api)
        wait_until_up(f"http://127.0.0.1:{port}", api, log)
        return f"http://127.0.0.1:{port}"

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        log = self.root / f"{name}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool=solo",
            "--loglevel=INFO", "--hostname", f"{name}@gpu-host", "-Q", QUEUE,
        ]  # fmt: skip
        with log.open("wb") as out:
            worker = subprocess.Popen(command, env=self.host(name), stdout=out, stderr=out)
        self.processes.append(worker)
        assert until(lambda: b" ready." in log.read_bytes(), 90), log.read_text()[-3000:]
        return worker

    def parts(self, audit_id: str) -> dict[str, AuditPart]:
        engine = create_engine(self.postgres.url)
        with Session(engine) as session:
            rows = session.scalars(
                select(AuditPart).where(AuditPart.audit_id == uuid.UUID(audit_id))
            ).all()
            session.expunge_all()
        engine.dispose()
        return {row.part: row for row in rows}

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.redis.stop()
        self.postgres.stop()


@pytest.fixture
def deployment(tmp_path: Path, s3_endpoint: str) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path, s3_endpoint)
    try:
        yield deployment
    finally:
        deployment.stop()


def test_two_workers_share_an_audit_and_one_dies_mid_bag(
    deployment: Deployment, small_fashion, tmp_path: Path
) -> None:
    images, labels = small_fashion
    url = deployment.start_api()
    workers = {name: deployment.start_worker(name) for name in ("gpu-a", "gpu-b")}
    path = tmp_path / "upload" / "fashion.npz"
    path.parent.mkdir()
    write_npz(path, images, labels)
    with path.open("rb") as file:
        created = httpx.post(
            f"{url}/audits", files={"file": (path.name, file)}, data={"preset": "tiny"}, timeout=60
        )
    assert created.status_code == 202, created.text
    audit_id = created.json()["id"]
    assert set(deployment.parts(audit_id)) == {"bag-0", "probe"}

    # Kill the worker of a bag once its first learner is checkpointed in the bucket.
    def a_bag_checkpointed() -> bool:
        return any(
            part.part.startswith("bag") and part.status == "running" and part.progress_done >= 1
            for part in deployment.parts(audit_id).values()
        )

    assert until(a_bag_checkpointed, 120), deployment.parts(audit_id)
    victim = next(
        p for p in deployment.parts(audit_id).values()
        if p.part.startswith("bag") and p.status == "running" and p.progress_done >= 1
    )  # fmt: skip
    assert victim.worker is not None
    pid = int(victim.worker.split(":")[1])
    (name,) = [n for n, w in workers.items() if w.pid == pid]
    os.kill(pid, signal.SIGKILL)
    workers[name].wait()

    def finished() -> dict[str, object]:
        return dict(httpx.get(f"{url}/audits/{audit_id}", timeout=10).json())

    assert until(lambda: finished()["status"] not in ("queued", "running"), 300), finished()
    audit = finished()
    assert audit["status"] == "succeeded", audit
    resumed = deployment.parts(audit_id)[victim.part]
    assert resumed.attempts == 2, "the killed worker's bag ran again on the other worker"
    survivor = next(n for n in workers if n != name)
    survivor_log = (tmp_path / f"{survivor}.log").read_text()
    assert re.search(rf"audit {audit_id}: resuming from a checkpoint of [1-9]", survivor_log)

    # Identical to the engine's serial run with the same seed: flags and scores.
    serial = detect(images, labels, config="tiny", seed=int(str(audit["seed"])), device="cpu")
    scores = httpx.get(f"{url}/audits/{audit_id}/scores", timeout=30).json()["scores"]
    np.testing.assert_array_equal(np.asarray(scores, np.float32), serial.score)
    summary = audit["summary"]
    assert isinstance(summary, dict)
    assert summary["n_flagged"] == int(serial.is_flagged.sum())
    assert summary["verdict"]["status"] == serial.verdict.status

    # The report's thumbnails come from the bucket; no host kept the upload or the results.
    page = httpx.get(f"{url}/audits/{audit_id}/report", timeout=30)
    assert page.status_code == 200
    thumbnail = re.search(rf"/audits/{audit_id}/samples/\d+\.png", page.text)
    assert thumbnail is not None
    picture = httpx.get(f"{url}{thumbnail.group(0)}", timeout=30)
    assert (picture.status_code, picture.headers["content-type"]) == (200, "image/png")
    for host in ("api", "gpu-a", "gpu-b"):
        kept = [p for p in (tmp_path / host).rglob("*") if p.suffix in (".npz", ".png")]
        assert not [p for p in kept if "cache" not in p.parts], (host, kept)
