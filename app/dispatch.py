"""Handing queued audits to the broker. The database is the source of truth: an audit records
when the broker took its task (``dispatched_at``), so one whose task never arrived (the broker
was down) or was forgotten (the broker restarted empty) is sent again by the reconciler. A task
sent twice is harmless: the first claim wins and the other finds nothing to do."""

from __future__ import annotations

import logging
import uuid

from app.context import Context
from app.db import transaction
from app.queue import send_audit
from app.services import audits as service

log = logging.getLogger(__name__)


def dispatch(context: Context, audit_ids: list[uuid.UUID]) -> int:
    """Send the audits' tasks and record which the broker took; the number sent."""
    sent: list[uuid.UUID] = []
    for audit_id in audit_ids:
        try:
            send_audit(context.celery, audit_id)
        except Exception as exc:  # left undispatched: the reconciler tries again
            log.warning("could not queue audit %s: %s", audit_id, exc)
            break  # the broker is down: the rest would fail too
        sent.append(audit_id)
    if sent:
        try:
            with transaction(context.sessions) as session:
                service.mark_dispatched(session, sent)
        except Exception as exc:  # they were sent; at worst the reconciler sends them again
            log.warning("could not record %d dispatched audits: %s", len(sent), exc)
    return len(sent)
