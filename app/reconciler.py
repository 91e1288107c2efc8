"""The reconciler: makes the queue agree with the database, which is the source of truth.

Every ``RECONCILE_INTERVAL_S`` (each API process runs one; every step is a conditional update, so
several at once do no harm) it

- re-queues a running audit whose worker stopped writing heartbeats (killed, out of memory, its
  machine gone) for ``HEARTBEAT_TIMEOUT_S``; the next worker resumes it from its checkpoint. After
  ``MAX_ATTEMPTS`` starts it fails the audit instead, with the reason;
- fails a running audit past its time limit whose worker, though alive, does not stop it;
- sends again the queued audits whose task the broker never took (it was down) or forgot (it
  restarted empty). A broker forgets everything at once, so the reconciler keeps a sentinel
  message in a queue of its own that no one consumes: when the sentinel is gone, so is every
  task that was queued with it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from celery import Celery
from kombu.entity import Exchange, Queue
from sqlalchemy import select, update
from sqlalchemy.sql import ColumnElement

from app.context import Context
from app.db import transaction
from app.dispatch import dispatch
from app.queue import send_notify
from app.tables import Audit, utcnow
from dataset_audit.schemas import AuditStatus

log = logging.getLogger(__name__)

SENTINEL = Queue(
    "audits.sentinel",
    Exchange("audits.sentinel", type="direct"),
    routing_key="audits.sentinel",
    durable=True,
)
# An audit is dispatched right after its row is written: leave the API that long to do it.
DISPATCH_GRACE_S = 10.0
# A worker past its time limit stops at its next progress report: give it that long.
TIME_LIMIT_GRACE_S = 300.0


@dataclass
class Reconciled:
    requeued: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    broker_forgot: bool = False
    sent: int = 0


def reconcile(context: Context) -> Reconciled:
    """One pass; safe to run from any number of processes at once."""
    done = Reconciled()
    _recover_silent(context, done)
    _fail_overdue(context, done)
    done.broker_forgot = broker_forgot(context.celery)
    waiting = _to_send(context, everything=done.broker_forgot)
    done.sent = dispatch(context, [*done.requeued, *(a for a in waiting if a not in done.requeued)])
    if done.requeued or done.failed or done.sent:
        log.info(
            "reconciled: %d re-queued, %d failed, %d sent%s",
            len(done.requeued), len(done.failed), done.sent,
            " (the broker had lost its tasks)" if done.broker_forgot else "",
        )  # fmt: skip
    return done


def _recover_silent(context: Context, done: Reconciled) -> None:
    settings = context.settings
    stale = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
    with context.sessions() as session:
        silent = session.execute(
            select(Audit.id, Audit.attempts, Audit.worker).where(
                Audit.status == AuditStatus.RUNNING, Audit.heartbeat_at < stale
            )
        ).all()
    for audit_id, attempts, worker in silent:
        still_silent = (
            (Audit.id == audit_id)
            & (Audit.status == AuditStatus.RUNNING)
            & (Audit.heartbeat_at < stale)
        )
        if attempts >= settings.max_attempts:
            reason = (
                f"its worker stopped responding on each of {attempts} attempts (last: {worker}); "
                "the dataset may need more memory than a worker has"
            )
            if _fail(context, still_silent, reason):
                done.failed.append(audit_id)
            continue
        with transaction(context.sessions) as session:
            requeued = session.execute(
                update(Audit)
                .where(still_silent)
                .values(
                    status=AuditStatus.QUEUED, worker=None, heartbeat_at=None, dispatched_at=None
                )
                .execution_options(synchronize_session=False)
            )
        if requeued.rowcount == 1:  # type: ignore[attr-defined]
            log.warning("audit %s: worker %s went silent; queued again", audit_id, worker)
            done.requeued.append(audit_id)


def _fail_overdue(context: Context, done: Reconciled) -> None:
    limit = context.settings.audit_time_limit_s
    overdue_since = utcnow() - timedelta(seconds=limit + TIME_LIMIT_GRACE_S)
    with context.sessions() as session:
        overdue = session.scalars(
            select(Audit.id).where(
                Audit.status == AuditStatus.RUNNING, Audit.claimed_at < overdue_since
            )
        ).all()
    for audit_id in overdue:
        condition = (
            (Audit.id == audit_id)
            & (Audit.status == AuditStatus.RUNNING)
            & (Audit.claimed_at < overdue_since)
        )
        reason = f"stopped after the time limit of {limit:.0f} s (AUDIT_TIME_LIMIT_S)"
        if _fail(context, condition, reason):
            done.failed.append(audit_id)


def _fail(context: Context, condition: ColumnElement[bool], reason: str) -> bool:
    with transaction(context.sessions) as session:
        failed = session.execute(
            update(Audit)
            .where(condition)
            .values(status=AuditStatus.FAILED, finished_at=utcnow(), error=reason, worker=None)
            .returning(Audit.id, Audit.callback_url)
        ).all()
    for audit_id, callback_url in failed:
        log.warning("audit %s: failed: %s", audit_id, reason)
        if callback_url is not None:
            try:
                send_notify(context.celery, audit_id)
            except Exception as exc:
                log.warning("audit %s: could not queue its webhook: %s", audit_id, exc)
    return bool(failed)


def _to_send(context: Context, *, everything: bool) -> list[uuid.UUID]:
    query = select(Audit.id).where(Audit.status == AuditStatus.QUEUED)
    if not everything:
        settled = utcnow() - timedelta(seconds=DISPATCH_GRACE_S)
        query = query.where(Audit.dispatched_at.is_(None), Audit.created_at < settled)
    with context.sessions() as session:
        return list(session.scalars(query.order_by(Audit.created_at)))


def broker_forgot(celery: Celery) -> bool:
    """True when the broker no longer holds the sentinel (it restarted empty, or this is the
    first look); plants a new one."""
    with celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)  # fail fast: the next pass tries again
        channel = connection.default_channel
        SENTINEL(channel).declare()
        _, size, _ = channel.queue_declare(queue=SENTINEL.name)
        if size:
            return False
        connection.Producer(channel).publish(
            {"planted_at": utcnow().isoformat()},
            exchange=SENTINEL.exchange,
            routing_key=SENTINEL.routing_key,
            serializer="json",
            retry=True,
        )
    return True


class Reconciler:
    """``reconcile`` every ``RECONCILE_INTERVAL_S`` in a daemon thread, until ``stop``."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)

    def start(self) -> None:
        if self.context.settings.reconcile_interval_s > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                reconcile(self.context)
            except Exception as exc:  # the database or broker is down: try again next time
                log.warning("reconciler: %s: %s", type(exc).__name__, exc)
            if self._stop.wait(self.context.settings.reconcile_interval_s):
                return
