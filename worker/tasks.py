"""The tasks, by name. They take ids only and re-load everything from the database."""

from __future__ import annotations

import logging
import uuid

from app.queue import RUN_AUDIT
from worker.celery_app import celery_app
from worker.context import worker_context
from worker.runner import run_audit

log = logging.getLogger(__name__)


@celery_app.task(name=RUN_AUDIT, acks_late=True, reject_on_worker_lost=True)
def run_audit_task(audit_id: str) -> None:
    try:
        parsed = uuid.UUID(audit_id)
    except ValueError:
        log.error("ignoring %s with a bad audit id %r", RUN_AUDIT, audit_id)
        return
    run_audit(worker_context(), parsed)
