"""The reconciler on SQLite (kombu's SQLAlchemy broker) and PostgreSQL (Redis): silent workers,
attempts and time limits, undispatched audits, and a broker that lost its tasks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text, update

from app import lifecycle
from app.context import Context
from app.db import transaction
from app.main import create_app
from app.reconciler import broker_forgot, reconcile
from app.settings import Settings
from app.tables import Audit, utcnow
from dataset_audit.schemas import AuditStatus
from tests.app.test_api import context_of, upload


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    # Audits as one task each: tests/worker/test_parts.py reconciles audits in parts.
    quiet = settings.model_copy(
        update={"reconcile_interval_s": 0, "heartbeat_timeout_s": 60, "max_attempts": 2,
                "audit_parallel_bags": False}
    )  # fmt: skip
    with TestClient(create_app(quiet)) as client:
        yield client


def queued(api: TestClient, npz_path: Path, **fields: object) -> uuid.UUID:
    response = upload(api, npz_path, reuse="false", **fields)
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


def set_columns(context: Context, audit_id: uuid.UUID, **values: object) -> None:
    with transaction(context.sessions) as session:
        session.execute(update(Audit).where(Audit.id == audit_id).values(**values))


def load(context: Context, audit_id: uuid.UUID) -> Audit:
    with context.sessions() as session:
        audit = session.get(Audit, audit_id)
        assert audit is not None
        return audit


def claim(context: Context, audit_id: uuid.UUID, worker: str) -> None:
    assert lifecycle.claim(context, audit_id, worker=worker)


def forget_everything(settings: Settings) -> None:
    """What a broker restarted without persistence holds: nothing."""
    broker = settings.resolved_broker_url
    if broker.startswith("redis"):
        client = redis.Redis.from_url(broker)
        client.flushdb()
        client.close()
        return
    engine = create_engine(broker.removeprefix("sqla+"))
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM kombu_message"))
        connection.execute(text("DELETE FROM kombu_queue"))
    engine.dispose()


def test_a_silent_worker_loses_its_audit_to_the_queue(api: TestClient, npz_path: Path) -> None:
    context = context_of(api)
    audit_id = queued(api, npz_path)
    claim(context, audit_id, "host:1:dead")
    reconcile(context)
    assert load(context, audit_id).status == AuditStatus.RUNNING  # its heartbeat is fresh

    set_columns(context, audit_id, heartbeat_at=utcnow() - timedelta(minutes=5))
    done = reconcile(context)
    assert done.requeued == [audit_id]
    audit = load(context, audit_id)
    assert (audit.status, audit.worker, audit.dispatched_at is not None) == ("queued", None, True)
    # The old worker, should it wake up, finds out at its next write and stops.
    progress = lifecycle.record_progress(
        context, audit_id, worker="host:1:dead", stage="clustering", done=2, total=4
    )
    assert progress == "lost"
    ending = lifecycle.Ending(AuditStatus.FAILED, "too late")
    assert not lifecycle.end(context, audit_id, worker="host:1:dead", ending=ending)
    assert not lifecycle.heartbeat(context, audit_id, worker="host:1:dead")


def test_an_audit_whose_workers_keep_dying_fails_with_the_reason(
    api: TestClient, npz_path: Path
) -> None:
    context = context_of(api)
    audit_id = queued(api, npz_path)
    for attempt in (1, 2):
        claim(context, audit_id, f"host:{attempt}:dead")
        set_columns(context, audit_id, heartbeat_at=utcnow() - timedelta(minutes=5))
        done = reconcile(context)
    assert done.failed == [audit_id]
    audit = load(context, audit_id)
    assert audit.status == AuditStatus.FAILED
    assert audit.error is not None
    assert "stopped responding on each of 2 attempts (last: host:2:dead)" in audit.error
    assert api.get(f"/audits/{audit_id}").json()["error"] == audit.error


def test_an_audit_past_its_time_limit_fails(api: TestClient, npz_path: Path) -> None:
    context = context_of(api)
    audit_id = queued(api, npz_path)
    claim(context, audit_id, "host:1:alive")
    limit = context.settings.audit_time_limit_s
    set_columns(context, audit_id, claimed_at=utcnow() - timedelta(seconds=limit + 3600))
    assert reconcile(context).failed == [audit_id]
    error = load(context, audit_id).error or ""
    assert "time limit of 86400 s (AUDIT_TIME_LIMIT_S)" in error


def test_an_audit_the_broker_never_took_is_sent(api: TestClient, npz_path: Path) -> None:
    context = context_of(api)
    reconcile(context)  # plants the sentinel
    fresh, stranded = queued(api, npz_path), queued(api, npz_path, seed=1)
    set_columns(context, fresh, dispatched_at=None)  # still within the API's grace
    set_columns(context, stranded, dispatched_at=None, created_at=utcnow() - timedelta(minutes=1))
    done = reconcile(context)
    assert (done.broker_forgot, done.sent) == (False, 1)
    assert load(context, stranded).dispatched_at is not None
    assert load(context, fresh).dispatched_at is None


def test_a_broker_that_lost_its_tasks_gets_every_queued_audit_again(
    api: TestClient, settings: Settings, npz_path: Path
) -> None:
    context = context_of(api)
    audits = [queued(api, npz_path, seed=seed) for seed in range(3)]
    reconcile(context)
    assert reconcile(context).broker_forgot is False  # the sentinel is there: nothing to do
    before = {a: load(context, a).dispatched_at for a in audits}

    forget_everything(settings)
    done = reconcile(context)
    assert (done.broker_forgot, done.sent) == (True, 3)
    assert all(load(context, a).dispatched_at > before[a] for a in audits)  # type: ignore[operator]
    assert broker_forgot(context.celery) is False
