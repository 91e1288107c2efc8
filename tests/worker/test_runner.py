"""The worker's audit runner, without Celery: the real engine on real images, on SQLite."""

from __future__ import annotations

import uuid
from pathlib import Path
from unittest.mock import patch

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.context import Context
from app.db import transaction
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from app.tables import Audit
from dataset_audit.schemas import AuditStatus
from tests.dataset_files import write_npz
from tests.worker.running import run_to_the_end
from worker.attempt import Attempt, shutdown_requested
from worker.runner import run_audit


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The serial path: an audit as one task (test_parts.py runs one in parts).
    settings = Settings(
        data_dir=tmp_path / "data", progress_interval_s=0.0, worker_device="cpu",
        audit_parallel_bags=False,
    )  # fmt: skip
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


@pytest.fixture
def fashion_npz(tmp_path: Path, small_fashion) -> Path:
    path = tmp_path / "d.npz"
    write_npz(path, *small_fashion)
    return path


def checkpoint_of(settings: Settings, audit_id: uuid.UUID) -> Path:
    return settings.data_dir / "storage" / "audits" / str(audit_id) / "checkpoint.npz"


def stored(context: Context, audit_id: uuid.UUID) -> Audit:
    with context.sessions() as session:
        audit = session.get(Audit, audit_id)
        assert audit is not None
        return audit


def test_an_audit_runs_once_and_saves_its_outcome(
    settings: Settings, context: Context, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)

    assert run_audit(context, audit_id) == AuditStatus.SUCCEEDED
    audit = stored(context, audit_id)
    assert audit.status == AuditStatus.SUCCEEDED
    assert (audit.attempts, audit.progress_stage) == (1, "groups")
    assert audit.progress_done == audit.progress_total > 0
    assert audit.n_flagged is not None
    assert audit.summary is not None
    assert sum(c["n_samples"] for c in audit.summary["classes"]) == 600
    assert not (checkpoint_of(settings, audit_id)).exists()

    # A redelivered task finds the audit finished and leaves it alone.
    assert run_audit(context, audit_id) is None
    assert stored(context, audit_id).attempts == 1
    assert run_audit(context, uuid.uuid4()) is None


def test_a_cancel_stops_the_engine_at_its_next_progress_report(
    settings: Settings, context: Context, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)
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
    assert stored(context, audit_id).error_code == "dataset_invalid"


def test_a_worker_without_its_device_fails_the_audit_as_the_operators_to_fix(
    settings: Settings, fashion_npz: Path
) -> None:
    """Not "the dataset cannot be audited": the dataset is fine, the worker is not."""
    audit_id = submit(settings, fashion_npz)
    missing = "cuda:7" if torch.cuda.device_count() < 8 else "mps"
    context = Context.from_settings(settings.model_copy(update={"worker_device": missing}))

    assert run_audit(context, audit_id) == AuditStatus.FAILED
    audit = stored(context, audit_id)
    assert audit.error_code == "device_unavailable"
    assert audit.error is not None
    assert audit.error.startswith("the worker's device is unavailable (")
    assert "an operator must fix the worker" in audit.error


def test_a_configuration_the_engine_refuses_fails_as_misconfigured(
    settings: Settings, context: Context, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)
    with transaction(context.sessions) as session:  # a preset this engine no longer has
        session.execute(update(Audit).where(Audit.id == audit_id).values(preset="retired"))

    assert run_audit(context, audit_id) == AuditStatus.FAILED
    audit = stored(context, audit_id)
    assert audit.error_code == "configuration_invalid"
    assert audit.error is not None
    assert audit.error.startswith("the service is misconfigured (unknown preset 'retired'")


def test_a_dataset_broken_in_storage_fails_with_a_readable_message(
    settings: Settings, context: Context, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)
    target = settings.data_dir / "storage" / "audits" / str(audit_id) / "dataset.npz"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])

    assert run_audit(context, audit_id) == AuditStatus.FAILED
    error = stored(context, audit_id).error
    assert error is not None
    assert error.startswith("the dataset cannot be read:")
    assert stored(context, audit_id).error_code == "dataset_unreadable"


def test_an_audit_runs_from_remote_storage(tmp_path: Path, fashion_npz: Path) -> None:
    """Any fsspec URL works as storage: fsspec's in-memory filesystem stands in for S3 here."""
    settings = Settings(
        data_dir=tmp_path / "data",
        storage_url=f"memory://audits-{uuid.uuid4().hex}",
        progress_interval_s=0.0,
        worker_device="cpu",
    )
    upgrade(settings.resolved_database_url)
    context = Context.from_settings(settings)
    audit_id = submit(settings, fashion_npz)
    assert context.storage.exists(f"audits/{audit_id}/dataset.npz")
    assert not (settings.data_dir / "storage").exists()

    assert run_to_the_end(context, audit_id) == AuditStatus.SUCCEEDED
    # The parts' checkpoints and results lived in the storage, and are gone with the audit done.
    assert not context.storage.exists(f"audits/{audit_id}/parts/bag-0.npz")


def test_a_missing_upload_fails_the_audit(
    settings: Settings, context: Context, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)
    (settings.data_dir / "storage" / "audits" / str(audit_id) / "dataset.npz").unlink()

    assert run_audit(context, audit_id) == AuditStatus.FAILED
    assert stored(context, audit_id).error == "the stored upload is missing"


def test_a_stopping_worker_gives_the_audit_back_and_a_later_run_resumes_it(
    settings: Settings, context: Context, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)
    checkpoint = checkpoint_of(settings, audit_id)
    reports = 0

    def stop_after_two_learners(stage: str, done: int, total: int) -> None:
        nonlocal reports
        reports += 1
        if reports == 3:
            shutdown_requested.set()

    try:
        with patch.object(Attempt, "__call__", wraps_reporter(stop_after_two_learners)):
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
    """Attempt.__call__ with ``hook`` run first, as the engine reports."""
    original = Attempt.__call__

    def call(self: Attempt, stage: str, done: int, total: int) -> None:
        hook(stage, done, total)
        original(self, stage, done, total)

    return call


def test_an_attempt_past_the_time_limit_fails_with_the_reason(
    settings: Settings, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)
    context = Context.from_settings(settings.model_copy(update={"audit_time_limit_s": 0.5}))
    checkpoint = checkpoint_of(settings, audit_id)

    assert run_audit(context, audit_id) == AuditStatus.FAILED
    audit = stored(context, audit_id)
    assert audit.error == "stopped after the time limit of 0 s (AUDIT_TIME_LIMIT_S)"
    assert not checkpoint.exists()


def test_a_worker_that_lost_its_audit_stops_and_saves_nothing(
    settings: Settings, context: Context, fashion_npz: Path
) -> None:
    """The reconciler took the audit from this worker (it looked dead) and re-queued it: the
    worker stops at its next report, leaving status and checkpoint to the next one."""
    audit_id = submit(settings, fashion_npz)
    checkpoint = checkpoint_of(settings, audit_id)

    def taken_away(stage: str, done: int, total: int) -> None:
        if stage == "clustering" and done == 1:
            with transaction(context.sessions) as session:
                session.execute(
                    update(Audit)
                    .where(Audit.id == audit_id)
                    .values(status=AuditStatus.QUEUED, worker=None, heartbeat_at=None)
                )

    with patch.object(Attempt, "__call__", wraps_reporter(taken_away)):
        assert run_audit(context, audit_id) is None
    audit = stored(context, audit_id)
    assert (audit.status, audit.worker, audit.n_flagged) == (AuditStatus.QUEUED, None, None)
    assert checkpoint.exists()  # the next worker resumes from it

    assert run_audit(context, audit_id) == AuditStatus.SUCCEEDED


def test_the_heartbeat_thread_beats_while_the_engine_is_silent(
    settings: Settings, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)
    context = Context.from_settings(
        settings.model_copy(update={"heartbeat_interval_s": 0.05, "progress_interval_s": 3600})
    )
    beats: list[object] = []

    def watch(stage: str, done: int, total: int) -> None:
        beats.append(stored(context, audit_id).heartbeat_at)

    with patch.object(Attempt, "__call__", wraps_reporter(watch)):
        assert run_audit(context, audit_id) == AuditStatus.SUCCEEDED
    # Progress is written once an hour here, yet the heartbeat moved on between reports.
    assert len(set(beats)) > len(beats) // 2


def test_an_unreadable_checkpoint_is_discarded_and_the_audit_starts_over(
    settings: Settings, context: Context, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)
    checkpoint = checkpoint_of(settings, audit_id)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"PK\x03\x04 not a checkpoint")
    assert run_audit(context, audit_id) == AuditStatus.SUCCEEDED
