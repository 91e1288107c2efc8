"""``celery -A worker.celery_app worker``: the worker process's Celery application."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready, worker_shutting_down
from sqlalchemy import select

from app.models import Audit, AuditStatus
from app.queue import make_celery, send_audit
from app.settings import get_settings
from worker.context import worker_context
from worker.runner import shutdown_requested

log = logging.getLogger(__name__)
celery_app = make_celery(get_settings(), include=("worker.tasks",))


@worker_ready.connect
def requeue_waiting(**_: Any) -> None:
    """Send the queued audits again: the broker may have lost them (or never got them, when it
    was down as they were uploaded). Claims are atomic, so a duplicate is a no-op."""
    context = worker_context()
    with context.sessions() as session:
        waiting = session.scalars(select(Audit.id).where(Audit.status == AuditStatus.QUEUED))
        ids = list(waiting)
    for audit_id in ids:
        send_audit(context.celery, audit_id)
    if ids:
        log.info("re-sent %d queued audits", len(ids))


@worker_shutting_down.connect
def stop_taking_audits(**_: Any) -> None:
    """A running audit stops at its next progress report and goes back to the queue."""
    shutdown_requested.set()
