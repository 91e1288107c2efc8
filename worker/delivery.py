"""Deliver an ended audit to its callback URL, one attempt per task, each attempt recorded.

The tenant sees whether each attempt delivered and when it started, never what the peer said or
why it failed: answers and errors told apart ports that are closed, open or filtered on any
address the service can reach. The detail goes to this worker's log, for operators. Retries are
timed from each attempt's start, so how long an attempt took does not show either.
"""

from __future__ import annotations

import logging
import time
import uuid

from app.context import Context
from app.db import transaction
from app.services import access
from app.tables import Audit, WebhookDelivery, utcnow
from app.views import to_read
from app.webhooks import payload, signed_headers
from dataset_audit.schemas import AuditStatus, WebhookState
from worker.webhook_client import post

log = logging.getLogger(__name__)


def deliver(context: Context, audit_id: uuid.UUID) -> float | None:
    """Try once; the delay before the next try, or None when done (delivered, given up, or
    nothing to deliver)."""
    settings = context.settings
    with transaction(context.sessions) as session:
        audit = session.get(Audit, audit_id)
        if audit is None or audit.callback_url is None or not AuditStatus(audit.status).finished:
            return None
        if audit.webhook_state != WebhookState.PENDING:
            return None  # a duplicate task, or one for a delivery dropped or concluded
        attempt = len(audit.deliveries) + 1
        if attempt > settings.webhook_max_attempts:
            audit.webhook_state = WebhookState.FAILED
            return None
        url, body = audit.callback_url, payload(to_read(audit))
        headers = signed_headers(access.webhook_secret(session, audit.tenant), body)

    started_at, started = utcnow(), time.monotonic()
    outcome = post(
        url, body, headers, allowed=settings.webhook_networks, deadline_s=settings.webhook_timeout_s
    )
    last = outcome.delivered or attempt >= settings.webhook_max_attempts
    with transaction(context.sessions) as session:
        audit = session.get(Audit, audit_id)
        if audit is None:
            return None  # deleted meanwhile
        session.add(
            WebhookDelivery(
                audit_id=audit_id,
                attempt=attempt,
                attempted_at=started_at,
                delivered=outcome.delivered,
            )
        )
        if last:
            audit.webhook_state = (
                WebhookState.DELIVERED if outcome.delivered else WebhookState.FAILED
            )
    log.log(
        logging.INFO if outcome.delivered else logging.WARNING,
        "audit %s: webhook attempt %d of %d %s: %s",
        audit_id, attempt, settings.webhook_max_attempts,
        "delivered" if outcome.delivered else "failed", outcome.detail,
    )  # fmt: skip
    if last:
        return None
    delay = settings.webhook_retry_base_s * 2.0 ** (attempt - 1)
    return max(0.0, delay - (time.monotonic() - started))
