"""Deliver an ended audit to its callback URL, one attempt per task, each attempt recorded."""

from __future__ import annotations

import logging
import uuid

from app.context import Context
from app.db import transaction
from app.tables import Audit, WebhookDelivery
from app.views import to_read
from app.webhooks import payload, post
from dataset_audit.schemas import AuditStatus

log = logging.getLogger(__name__)


def deliver(context: Context, audit_id: uuid.UUID) -> float | None:
    """Try once; the delay before the next try, or None when done (delivered, given up, or
    nothing to deliver)."""
    settings = context.settings
    with transaction(context.sessions) as session:
        audit = session.get(Audit, audit_id)
        if audit is None or audit.callback_url is None or not AuditStatus(audit.status).finished:
            return None
        if any(d.delivered for d in audit.deliveries):
            return None  # a duplicate task
        attempt = len(audit.deliveries) + 1
        if attempt > settings.webhook_max_attempts:
            return None
        url, body = audit.callback_url, payload(to_read(audit))

    status_code, error = post(
        url, body, secret=settings.webhook_secret, timeout_s=settings.webhook_timeout_s
    )
    delivered = error is None
    with transaction(context.sessions) as session:
        if session.get(Audit, audit_id) is None:
            return None  # deleted meanwhile
        session.add(
            WebhookDelivery(
                audit_id=audit_id,
                attempt=attempt,
                status_code=status_code,
                error=error,
                delivered=delivered,
            )
        )
    if delivered:
        log.info("audit %s: webhook delivered (attempt %d)", audit_id, attempt)
        return None
    if attempt >= settings.webhook_max_attempts:
        log.warning("audit %s: webhook given up after %d attempts: %s", audit_id, attempt, error)
        return None
    return float(settings.webhook_retry_base_s * 2 ** (attempt - 1))
