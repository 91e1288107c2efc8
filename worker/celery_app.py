"""``celery -A worker.celery_app worker``: the worker process's Celery application."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready, worker_shutting_down
from sqlalchemy import select

from app.db import transaction
from app.dispatch import dispatch
from app.models import Audit, AuditStatus
from app.queue import make_celery
from app.services import audits as service
from app.settings import get_settings
from worker.context import died_here, worker_context
from worker.runner import shutdown_requested

log = logging.getLogger(__name__)
celery_app = make_celery(get_settings(), include=("worker.tasks",))


@worker_ready.connect
def recover_local_audits(**_: Any) -> None:
    """Queue again, at once, the audits that a worker on this host held when its process died
    (killed, out of memory): the reconciler would otherwise wait for their heartbeats to time
    out. Another host's audits are left to the reconciler."""
    context = worker_context()
    with context.sessions() as session:
        running = session.execute(
            select(Audit.id, Audit.worker).where(Audit.status == AuditStatus.RUNNING)
        ).all()
    orphans = [(audit_id, name) for audit_id, name in running if name and died_here(name)]
    for audit_id, name in orphans:
        with transaction(context.sessions) as session:
            service.release(session, audit_id, worker=name)
        log.warning("audit %s: its worker %s died; queued again", audit_id, name)
    if orphans:
        dispatch(context, [audit_id for audit_id, _ in orphans])


@worker_shutting_down.connect
def stop_taking_audits(**_: Any) -> None:
    """A running audit stops at its next progress report and goes back to the queue."""
    shutdown_requested.set()
