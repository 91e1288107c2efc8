"""The worker's audit runner, without Celery: the real engine on real images, on SQLite."""

from __future__ import annotations

import uuid
from pathlib import Path
from unittest.mock import patch

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.context import Context
from app.db import transaction
from app.main import create_app
from app.migrate import upgrade
from app.models import Audit, AuditStatus
from app.settings import Settings
from tests.dataset_files import write_npz
from worker.runner import ProgressReporter, run_audit, shutdown_requested


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", progress_interval_s=0.0, worker_device="cpu")
    upgrade(settings.resolved_database_url)
    return settings


@pytest.fixture
def context(settings: Settings) -> Context:
    return Context.from_settings(settings)


def submit(settings: Settings, path: Path) -> uuid.UUID:
    with TestClient(create_app(settings)) as client, path.open("rb") as file:
        response = client.post(
            "/audits", files={"file": (path.name, file)}, data={"preset": "tiny"}
        )
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


def stored(context: Context, audit_id: uuid.UUID) -> Audit:
    with context.sessions() as session:
        audit = session.get(Audit, audit_id)
        assert audit is not None
        return audit


def test_an_audit_runs_once_and_saves_its_outcome(
    settings: Settings, context: Context, tmp_path: Path, small_fashion
) -> None:
    path = tmp_path / "d.npz"
    write_npz(path, *small_fashion)
    audit_id = submit(settings, path)

    assert run_audit(context, audit_id) == AuditStatus.SUCCEEDED
    audit = stored(context, audit_id)
    assert audit.status == AuditStatus.SUCCEEDED
    assert (audit.attempts, audit.progress_stage) == (1, "refinement")
    assert audit.progress_done == audit.progress_total > 0
    assert audit.n_flagged is not None
    assert audit.summary is not None
    assert sum(c["n_samples"] for c in audit.summary["classes"]) == 600
    assert not (
        settings.data_dir / "storage" / "audits" / str(audit_id) / "checkpoint.npz"
    ).exists()

    # A redelivered task finds the audit finished and leaves it alone.
    assert run_audit(context, audit_id) is None
    assert stored(context, audit_id).attempts == 1
    assert run_audit(context, uuid.uuid4()) is None


def test_a_cancel_stops_the_engine_at_its_next_progress_report(
    settings: Settings, context: Context, tmp_path: Path, small_fashion
) -> None:
    path = tmp_path / "d.npz"
    write_npz(path, *small_fashion)
    audit_id = submit(settings, path)
    with transaction(context.sessions) as session:
        session.execute(update(Audit).where(Audit.id == audit_id).values(cancel_requested=True))

    assert run_audit(context, audit_id) == AuditStatus.CANCELLED
    audit = stored(context, audit_id)
    assert audit.error == "cancelled while running"
    assert audit.progress_stage == "clustering"


def test_a_dataset_the_engine_refuses_fails_with_its_reason(
    settings: Settings, context: Context, tmp_path: Path, small_fashion
) -> None:
    images, labels = small_fashion
    path = tmp_path / "few.npz"
    write_npz(path, images[:40], labels[:40])  # far too few samples for the tiny preset
    audit_id = submit(settings, path)

    assert run_audit(context, audit_id) == AuditStatus.FAILED
    error = stored(context, audit_id).error
    assert error is not None
    assert error.startswith("the dataset cannot be audited:")


def test_a_dataset_broken_in_storage_fails_with_a_readable_message(
    settings: Settings, context: Context, tmp_path: Path, small_fashion
) -> None:
    path = tmp_path / "d.npz"
    write_npz(path, *small_fashion)
    audit_id = submit(settings, path)
    target = settings.data_dir / "storage" / "audits" / str(audit_id) / "dataset.npz"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])

    assert run_audit(context, audit_id) == AuditStatus.FAILED
    error = stored(context, audit_id).error
    assert error is not None
    assert error.startswith("the dataset cannot be read:")


def test_an_audit_runs_from_remote_storage(tmp_path: Path, small_fashion) -> None:
    """Any fsspec URL works as storage: fsspec's in-memory filesystem stands in for S3 here."""
    settings = Settings(
        data_dir=tmp_path / "data",
        storage_url=f"memory://audits-{uuid.uuid4().hex}",
        progress_interval_s=0.0,
        worker_device="cpu",
    )
    upgrade(settings.resolved_database_url)
    context = Context.from_settings(settings)
    path = tmp_path / "d.npz"
    write_npz(path, *small_fashion)
    audit_id = submit(settings, path)
    assert context.storage.exists(f"audits/{audit_id}/dataset.npz")
    assert not (settings.data_dir / "storage").exists()

    assert run_audit(context, audit_id) == AuditStatus.SUCCEEDED
    # The checkpoint lived in the worker's own folder, and is gone with the audit done.
    assert not list((settings.data_dir / "checkpoints").rglob("*.npz"))


def test_a_missing_upload_fails_the_audit(
    settings: Settings, context: Context, tmp_path: Path, small_fashion
) -> None:
    path = tmp_path / "d.npz"
    write_npz(path, *small_fashion)
    audit_id = submit(settings, path)
    (settings.data_dir / "storage" / "audits" / str(audit_id) / "dataset.npz").unlink()

    assert run_audit(context, audit_id) == AuditStatus.FAILED
    assert stored(context, audit_id).error == "the stored upload is missing"


def test_a_stopping_worker_gives_the_audit_back_and_a_later_run_resumes_it(
    settings: Settings, context: Context, tmp_path: Path, small_fashion
) -> None:
    path = tmp_path / "d.npz"
    write_npz(path, *small_fashion)
    audit_id = submit(settings, path)
    checkpoint = settings.data_dir / "storage" / "audits" / str(audit_id) / "checkpoint.npz"
    reports = 0

    def stop_after_two_learners(stage: str, done: int, total: int) -> None:
        nonlocal reports
        reports += 1
        if reports == 3:
            shutdown_requested.set()

    try:
        with patch.object(ProgressReporter, "__call__", wraps_reporter(stop_after_two_learners)):
            assert run_audit(context, audit_id) == AuditStatus.QUEUED
    finally:
        shutdown_requested.clear()
    audit = stored(context, audit_id)
    assert (audit.status, audit.worker, audit.attempts) == (AuditStatus.QUEUED, None, 1)
    assert checkpoint.exists()

    assert run_audit(context, audit_id) == AuditStatus.SUCCEEDED
    assert stored(context, audit_id).attempts == 2
    assert not checkpoint.exists()


def wraps_reporter(hook):
    """ProgressReporter.__call__ with ``hook`` run first, as the engine reports."""
    original = ProgressReporter.__call__

    def call(self: ProgressReporter, stage: str, done: int, total: int) -> None:
        hook(stage, done, total)
        original(self, stage, done, total)

    return call
