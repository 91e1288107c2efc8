"""What operators read: /metrics (from the database, on SQLite and PostgreSQL), /docs without a
CDN, and JSON logs from the API and the worker."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from uvicorn.config import LOGGING_CONFIG

from app import monitoring
from app.db import transaction
from app.logs import SERVER_LOGGERS, configure_logging
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from app.tables import Audit, utcnow
from dataset_audit.schemas import AuditStatus
from tests.e2e.conftest import free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The reconciler off: it would re-queue the silent worker's audit these tests set up."""
    quiet = settings.model_copy(update={"reconcile_interval_s": 0})
    with TestClient(create_app(quiet)) as client:
        yield client


def upload(client: TestClient, path: Path) -> uuid.UUID:
    with path.open("rb") as file:
        response = client.post("/audits", files={"file": file}, data={"reuse": "false"})
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


def scrape(client: TestClient) -> Samples:
    """Every sample of /metrics, by name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def set_audit(client: TestClient, audit_id: uuid.UUID, **columns: Any) -> None:
    """A state a worker would have left (the metrics read rows, whoever wrote them)."""
    context = client.app.state.context  # type: ignore[attr-defined]
    with transaction(context.sessions) as session:
        audit = session.get(Audit, audit_id)
        assert audit is not None
        for name, column_value in columns.items():
            setattr(audit, name, column_value)


@pytest.fixture
def fresh_totals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitoring, "TOTALS_REFRESH_S", 0.0)


@pytest.mark.usefixtures("fresh_totals")
def test_metrics_report_the_audits_in_the_database(client: TestClient, npz_path: Path) -> None:
    before = scrape(client)
    ids = [upload(client, npz_path) for _ in range(7)]
    succeeded, failed, old, running, stale, undispatched, dispatched = ids
    now = utcnow()
    start = now - timedelta(hours=3)
    set_audit(client, succeeded, status=AuditStatus.SUCCEEDED, started_at=start,
              finished_at=start + timedelta(seconds=42))  # fmt: skip
    set_audit(client, failed, status=AuditStatus.FAILED, started_at=start,
              finished_at=start + timedelta(seconds=4000))  # fmt: skip
    set_audit(client, old, status=AuditStatus.CANCELLED, started_at=now - timedelta(days=2),
              finished_at=now - timedelta(days=2) + timedelta(seconds=5))  # fmt: skip
    set_audit(client, running, status=AuditStatus.RUNNING, worker="w1@gpu-a", started_at=start,
              heartbeat_at=now - timedelta(seconds=30))  # fmt: skip
    set_audit(client, stale, status=AuditStatus.RUNNING, worker="w2@gpu-b", started_at=start,
              heartbeat_at=now - timedelta(seconds=600))  # fmt: skip
    set_audit(client, undispatched, dispatched_at=None)
    set_audit(client, dispatched, dispatched_at=now)

    after = scrape(client)
    assert value(after, "dataset_audit_database_up") == 1
    by_status = {s.value: value(after, "dataset_audit_audits", status=s.value) for s in AuditStatus}
    assert by_status == {"queued": 2, "running": 2, "succeeded": 1, "failed": 1, "cancelled": 1}
    assert value(after, "dataset_audit_queued_audits") == 2
    assert value(after, "dataset_audit_undispatched_audits") == 1
    size = npz_path.stat().st_size
    assert value(after, "dataset_audit_stored_bytes") == 7 * size
    for name, sent in (
        ("dataset_audit_uploads_total", 7),
        ("dataset_audit_upload_bytes_total", 7 * size),
    ):
        assert (value(after, name) or 0) - (value(before, name) or 0) == sent

    # A gauge histogram of the last 24 hours: the audit cancelled two days ago is not in it.
    histogram = "dataset_audit_audit_duration_seconds"
    assert value(after, f"{histogram}_gcount", status="succeeded") == 1
    assert value(after, f"{histogram}_gsum", status="succeeded") == pytest.approx(42, abs=1e-3)
    assert value(after, f"{histogram}_bucket", status="succeeded", le="30.0") == 0
    assert value(after, f"{histogram}_bucket", status="succeeded", le="60.0") == 1
    assert value(after, f"{histogram}_bucket", status="failed", le="3600.0") == 0
    assert value(after, f"{histogram}_bucket", status="failed", le="7200.0") == 1
    assert value(after, f"{histogram}_bucket", status="failed", le="+Inf") == 1
    assert value(after, f"{histogram}_gcount", status="cancelled") == 0
    assert value(after, f"{histogram}_bucket", status="cancelled", le="+Inf") == 0

    age = "dataset_audit_worker_heartbeat_age_seconds"
    assert 30 <= (value(after, age, worker="w1@gpu-a") or 0) < 90
    assert 600 <= (value(after, age, worker="w2@gpu-b") or 0) < 660
    assert value(after, "dataset_audit_live_workers") == 1  # HEARTBEAT_TIMEOUT_S is 120
    assert value(after, "process_cpu_seconds_total") is not None


def test_totals_are_read_again_only_after_their_interval(
    client: TestClient, npz_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(client, npz_path)
    first = scrape(client)
    upload(client, npz_path)
    second = scrape(client)
    assert value(second, "dataset_audit_queued_audits") == 2  # read at every scrape
    stored = value(first, "dataset_audit_stored_bytes")
    assert value(second, "dataset_audit_stored_bytes") == stored  # not yet read again
    monkeypatch.setattr(monitoring, "TOTALS_REFRESH_S", 0.0)
    assert value(scrape(client), "dataset_audit_stored_bytes") == 2 * npz_path.stat().st_size


def test_metrics_answer_while_the_database_is_down(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url="postgresql+psycopg://postgres@127.0.0.1:9/nowhere",  # nothing listens
        reconcile_interval_s=0,
    )
    with TestClient(create_app(settings)) as client:
        samples = scrape(client)
    assert value(samples, "dataset_audit_database_up") == 0
    assert value(samples, "dataset_audit_audits", status="queued") is None
    assert value(samples, "process_cpu_seconds_total") is not None


@pytest.fixture
def keyed_client(tmp_path: Path) -> Iterator[TestClient]:
    """An app with API keys required."""
    settings = Settings(data_dir=tmp_path / "data", auth=True, reconcile_interval_s=0)
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings)) as client:
        yield client


def test_metrics_need_no_key_and_stay_out_of_the_schema(keyed_client: TestClient) -> None:
    assert keyed_client.get("/audits").status_code == 401
    assert keyed_client.get("/metrics").status_code == 200
    assert "/metrics" not in keyed_client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_every_asset_from_the_app(keyed_client: TestClient, page: str) -> None:
    html = keyed_client.get(page).text
    assert re.search(r"https?://", html) is None  # no CDN, no web font
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(url.endswith(".js") for url in assets)
    for url in assets:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        response = keyed_client.get(url)
        assert response.status_code == 200, url
        kind = response.headers["content-type"]
        expected = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
        assert expected[Path(url).suffix] in kind, (url, kind)
    assert keyed_client.get("/openapi.json").status_code == 200


@contextmanager
def logging_restored() -> Iterator[None]:
    """Put back what configure_logging changes, so that pytest's own capture keeps working."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in SERVER_LOGGERS)]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for logger, handlers, level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_logs_are_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    with logging_restored():
        logging.config.dictConfig(LOGGING_CONFIG)  # as uvicorn starts
        configure_logging(Settings(log_format="json"))
        logging.getLogger("app.reconciler").warning("re-queued %d audits", 2)
        coloured = {"color_message": "Started server process [\x1b[36m%d\x1b[0m]"}
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 7, extra=coloured)
        access = ("127.0.0.1:5", "GET", "/metrics", "1.1", 200)
        logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', *access)
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            logging.getLogger("app.api").exception("failed")
    records = json_lines(capsys.readouterr().err)
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [
        ("WARNING", "app.reconciler", "re-queued 2 audits"),
        ("INFO", "uvicorn.error", "Started server process [7]"),
        ("INFO", "uvicorn.access", '127.0.0.1:5 - "GET /metrics HTTP/1.1" 200'),
        ("ERROR", "app.api", "failed"),
    ]
    assert all("time" in record and "color_message" not in record for record in records)
    assert "ValueError: bad\nthing" in records[-1]["exc_info"]


def test_text_logging_is_left_to_uvicorn_and_celery() -> None:
    root = logging.getLogger()
    handlers = root.handlers[:]
    configure_logging(Settings(log_format="text"))
    assert root.handlers == handlers


def test_uvicorn_logs_json(tmp_path: Path) -> None:
    """As the API image runs it, ``uvicorn app.main:app``: uvicorn's own lines turn JSON too."""
    port, log = free_port(), tmp_path / "uvicorn.log"
    env = {**os.environ, "LOG_FORMAT": "json", "DATA_DIR": str(tmp_path / "data"),
           "RECONCILE_INTERVAL_S": "0"}  # fmt: skip
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    with log.open("w") as stderr:
        server = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=stderr)
        try:
            deadline = time.monotonic() + 60
            while not _answers(f"http://127.0.0.1:{port}/healthz"):
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
    records = json_lines(log.read_text())
    assert ("INFO", "uvicorn.error", "Application startup complete.") in [
        (r["level"], r["logger"], r["message"]) for r in records
    ]
    assert any(r["logger"] == "uvicorn.access" and "/healthz" in r["message"] for r in records)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_the_worker_logs_json(tmp_path: Path) -> None:
    """Celery sets up its text handlers, then the worker's signal receiver replaces them."""
    script = (
        "import logging\n"
        "from worker.celery_app import celery_app\n"
        "celery_app.log.setup(loglevel='INFO', redirect_stdouts=False)\n"
        "logging.getLogger('celery.task').info('task %s', 'ran')\n"
        "logging.getLogger('worker.runner').warning('audit lost')\n"
    )
    env = {**os.environ, "LOG_FORMAT": "json", "DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    records = json_lines(done.stderr)
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [
        ("INFO", "celery.task", "task ran"),
        ("WARNING", "worker.runner", "audit lost"),
    ]
