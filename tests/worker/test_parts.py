"""An audit run in parts (AUDIT_PARALLEL_BAGS), without Celery: each part and the merge called
directly, as separate workers would, on the real engine and real images, on SQLite."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
from sqlalchemy import select, update

from app import lifecycle
from app.context import Context
from app.db import transaction
from app.migrate import upgrade
from app.reconciler import reconcile
from app.services import queries
from app.settings import Settings
from app.tables import Audit, AuditPart, utcnow
from dataset_audit.schemas import AuditStatus
from incompat.engine import Run
from tests.dataset_files import write_npz
from tests.worker.test_runner import stored, submit, wraps_reporter
from worker.attempt import Attempt, shutdown_requested
from worker.runner import run_audit, run_part

PARTS = ["bag-0", "probe"]  # tiny: one bag, and the trigger-group probe


def make_settings(tmp_path: Path, name: str, *, parallel: bool) -> Settings:
    settings = Settings(
        data_dir=tmp_path / name, progress_interval_s=0.0, worker_device="cpu",
        audit_parallel_bags=parallel, reconcile_interval_s=0,
    )  # fmt: skip
    upgrade(settings.resolved_database_url)
    return settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, "parallel", parallel=True)


@pytest.fixture
def context(settings: Settings) -> Context:
    return Context.from_settings(settings)


@pytest.fixture
def fashion_npz(tmp_path: Path, small_fashion) -> Path:
    path = tmp_path / "d.npz"
    write_npz(path, *small_fashion)
    return path


def part_rows(context: Context, audit_id: uuid.UUID) -> dict[str, AuditPart]:
    with context.sessions() as session:
        rows = session.scalars(select(AuditPart).where(AuditPart.audit_id == audit_id)).all()
        session.expunge_all()
    return {row.part: row for row in rows}


def test_parts_then_the_merge_give_the_serial_result(
    tmp_path: Path, settings: Settings, context: Context, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)
    assert set(part_rows(context, audit_id)) == set(PARTS)
    assert lifecycle.parts_of("tiny") == [("bag-0", 4), ("probe", 1)]
    assert run_audit(context, audit_id) is None, "no merge before the parts are done"

    with patch.object(lifecycle, "send_audit") as send_merge:
        assert run_part(context, audit_id, "probe") is True
        send_merge.assert_not_called()
        audit = stored(context, audit_id)
        assert (audit.status, audit.worker, audit.attempts) == (AuditStatus.RUNNING, None, 1)
        assert run_part(context, audit_id, "bag-0") is True
        send_merge.assert_called_once()  # by the last part done, once
    assert run_part(context, audit_id, "bag-0") is None, "a redelivered part is a no-op"
    audit = stored(context, audit_id)
    assert (audit.progress_stage, audit.progress_done, audit.progress_total) == (
        "clustering", 4, 4,
    )  # fmt: skip

    assert run_audit(context, audit_id) == AuditStatus.SUCCEEDED
    assert run_audit(context, audit_id) is None, "the merge runs once"
    assert stored(context, audit_id).attempts == 1
    assert not (settings.data_dir / "storage" / "audits" / str(audit_id) / "parts").exists()

    serial_settings = make_settings(tmp_path, "serial", parallel=False)
    serial_context = Context.from_settings(serial_settings)
    serial_id = submit(serial_settings, fashion_npz)
    assert run_audit(serial_context, serial_id) == AuditStatus.SUCCEEDED
    np.testing.assert_array_equal(scores(context, audit_id), scores(serial_context, serial_id))
    assert stored(context, audit_id).n_flagged == stored(serial_context, serial_id).n_flagged


def scores(context: Context, audit_id: uuid.UUID) -> np.ndarray:
    with context.sessions() as session:
        found = queries.scores(session, stored(context, audit_id))
    assert found is not None
    return found


def test_a_cancel_ends_an_audit_in_parts_and_stops_its_running_part(
    context: Context, settings: Settings, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)

    def cancel_after_one(stage: str, done: int, total: int) -> None:
        if done == 1:
            lifecycle.cancel(context, audit_id)

    with patch.object(Attempt, "__call__", wraps_reporter(cancel_after_one)):
        assert run_part(context, audit_id, "bag-0") is None
    audit = stored(context, audit_id)
    assert (audit.status, audit.error) == (AuditStatus.CANCELLED, "cancelled while running")
    assert run_part(context, audit_id, "probe") is None, "a cancelled audit's parts do nothing"
    assert part_rows(context, audit_id)["probe"].status == "queued"


def test_a_stopping_worker_gives_its_part_back_and_another_resumes_it(
    context: Context, settings: Settings, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)
    key = settings.data_dir / "storage" / "audits" / str(audit_id) / "parts" / "bag-0.npz"

    def stop_after_two(stage: str, done: int, total: int) -> None:
        if done == 2:
            shutdown_requested.set()

    try:
        with patch.object(Attempt, "__call__", wraps_reporter(stop_after_two)):
            assert run_part(context, audit_id, "bag-0") is False
    finally:
        shutdown_requested.clear()
    row = part_rows(context, audit_id)["bag-0"]
    assert (row.status, row.worker, row.attempts) == ("queued", None, 1)
    assert key.exists(), "the checkpoint stays for the next worker"

    resumed: list[int] = []
    with patch.object(Attempt, "__call__", wraps_reporter(lambda s, d, t: resumed.append(d))):
        assert run_part(context, audit_id, "bag-0") is True
    assert resumed[0] == 2, "picks up after the second learner"
    assert part_rows(context, audit_id)["bag-0"].attempts == 2


def test_a_part_the_engine_refuses_fails_the_audit(
    context: Context, settings: Settings, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)
    with patch.object(Run, "probe", side_effect=RuntimeError("boom")):
        assert run_part(context, audit_id, "probe") is None
    audit = stored(context, audit_id)
    assert (audit.status, audit.error_code) == (AuditStatus.FAILED, "internal")
    assert run_part(context, audit_id, "bag-0") is None


def test_the_reconciler_requeues_a_silent_part_and_sends_a_lost_merge(
    context: Context, settings: Settings, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)
    assert run_part(context, audit_id, "probe") is True
    long_ago = utcnow() - timedelta(hours=1)
    # bag-0's worker died mid-run: its part and the audit stopped beating.
    with transaction(context.sessions) as session:
        session.execute(
            update(AuditPart)
            .where(AuditPart.audit_id == audit_id, AuditPart.part == "bag-0")
            .values(status="running", worker="dead@host", attempts=1, heartbeat_at=long_ago)
        )
        session.execute(update(Audit).where(Audit.id == audit_id).values(heartbeat_at=long_ago))

    with patch("app.parts.send_part") as send_part:
        done = reconcile(context)
    assert done.requeued_parts == [(audit_id, "bag-0")]
    # (sent again on the reconciler's first look, which cannot tell whether the broker lost it)
    assert {call.args for call in send_part.call_args_list} == {(context.celery, audit_id, "bag-0")}
    assert stored(context, audit_id).status == AuditStatus.RUNNING, "the audit stays running"

    # The last part's worker died between storing its result and sending the merge.
    with patch.object(lifecycle, "dispatch"):
        assert run_part(context, audit_id, "bag-0") is True
    with transaction(context.sessions) as session:
        session.execute(update(Audit).where(Audit.id == audit_id).values(heartbeat_at=long_ago))
    with patch.object(lifecycle, "send_audit") as send_merge:
        reconcile(context)
    send_merge.assert_called_once_with(context.celery, audit_id)
    assert run_audit(context, audit_id) == AuditStatus.SUCCEEDED


def test_a_part_that_keeps_dying_fails_the_audit(
    context: Context, settings: Settings, fashion_npz: Path
) -> None:
    audit_id = submit(settings, fashion_npz)
    with transaction(context.sessions) as session:
        session.execute(
            update(AuditPart)
            .where(AuditPart.audit_id == audit_id, AuditPart.part == "bag-0")
            .values(status="running", worker="dead@host", attempts=settings.max_attempts,
                    heartbeat_at=utcnow() - timedelta(hours=1))
        )  # fmt: skip
        session.execute(
            update(Audit).where(Audit.id == audit_id).values(status=AuditStatus.RUNNING)
        )
    assert reconcile(context).failed == [audit_id]
    audit = stored(context, audit_id)
    assert (audit.status, audit.error_code) == (AuditStatus.FAILED, "worker_lost")
    assert "bag-0" in (audit.error or "")
