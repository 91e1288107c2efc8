"""The tasks, by name. They take ids only and re-load everything from the database."""

from __future__ import annotations

import logging
import uuid

from app.queue import NOTIFY, RUN_AUDIT, RUN_PART, send_notify
from app.webhook_queue import give_up
from worker.celery_app import celery_app
from worker.delivery import deliver
from worker.identity import worker_context
from worker.runner import run_audit, run_part

log = logging.getLogger(__name__)


@celery_app.task(name=RUN_AUDIT, acks_late=True, reject_on_worker_lost=True)
def run_audit_task(audit_id: str) -> None:
    parsed = _audit_id(RUN_AUDIT, audit_id)
    if parsed is not None:
        run_audit(worker_context(), parsed)


@celery_app.task(name=RUN_PART, acks_late=True, reject_on_worker_lost=True)
def run_part_task(audit_id: str, part: str) -> None:
    """One part of an audit run in parts (app/parts.py)."""
    parsed = _audit_id(RUN_PART, audit_id)
    if parsed is not None:
        run_part(worker_context(), parsed, part)


@celery_app.task(name=NOTIFY, acks_late=True)
def notify_task(audit_id: str) -> None:
    """One delivery attempt (queue ``webhooks``: its own workers, see app/queue.py)."""
    parsed = _audit_id(NOTIFY, audit_id)
    if parsed is None:
        return
    context = worker_context()
    retry_in = deliver(context, parsed)
    if retry_in is None:
        return
    try:
        send_notify(context.celery, parsed, countdown=retry_in)
    except Exception as exc:
        log.warning("audit %s: could not queue its next webhook attempt: %s", parsed, exc)
        give_up(context, parsed)


def _audit_id(task: str, value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        log.error("ignoring %s with a bad audit id %r", task, value)
        return None
