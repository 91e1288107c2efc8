"""Which ended audits' webhooks are queued: at most ``WEBHOOK_MAX_OUTSTANDING`` pending per
tenant.

Every audit that ends with a callback URL (succeeded, failed or cancelled) holds a place while
its delivery is pending; past the bound, the delivery is dropped: recorded as such, shown to the
tenant, never attempted. This is what closes the upload-and-cancel loop (a cancelled audit leaves
the quota of active audits at once, so the loop could otherwise queue deliveries without end),
whichever way the audits end. Counting cancelled audits against that quota for a while would only
slow the loop, and would hold back an honest tenant's uploads after a cancel.

A pending delivery whose task was lost (the broker restarted empty, its worker was killed) would
hold its place for good; it stops counting once its audit ended longer ago than its retries can
take, plus ``LOST_AFTER_S``.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from app.context import Context
from app.db import transaction
from app.queue import send_notify
from app.services import access
from app.settings import Settings
from app.tables import Audit, utcnow
from dataset_audit.schemas import WebhookState

log = logging.getLogger(__name__)

LOST_AFTER_S = 900.0


def queue_deliveries(context: Context, ended: list[tuple[uuid.UUID, str | None]]) -> None:
    """Queue the webhooks of audits that just ended (after their transaction committed), or drop
    those over their tenant's bound."""
    for audit_id, callback_url in ended:
        if callback_url is None:
            continue
        try:
            admitted = _admit(context, audit_id)
        except Exception as exc:  # the audit's end stands; only its webhook is lost
            log.warning("audit %s: could not queue its webhook: %s", audit_id, exc)
            continue
        if not admitted:
            continue
        try:
            send_notify(context.celery, audit_id)
        except Exception as exc:
            log.warning("audit %s: could not queue its webhook: %s", audit_id, exc)
            give_up(context, audit_id)


def _admit(context: Context, audit_id: uuid.UUID) -> bool:
    """Mark the audit's delivery pending, or dropped when its tenant has its fill pending."""
    settings = context.settings
    with transaction(context.sessions) as session:
        # The write comes first: SQLite's write lock (or PostgreSQL's row lock) is taken before
        # any read, and an audit is admitted once.
        tenant = session.scalar(
            update(Audit)
            .where(Audit.id == audit_id, Audit.webhook_state.is_(None))
            .values(webhook_state=WebhookState.PENDING)
            .returning(Audit.tenant)
            .execution_options(synchronize_session=False)
        )
        if tenant is None:
            return False
        access.lock_tenant(session, tenant)  # concurrent endings of one tenant count in turn
        pending = session.scalar(
            select(func.count()).where(
                Audit.tenant == tenant,
                Audit.webhook_state == WebhookState.PENDING,
                Audit.id != audit_id,
                Audit.finished_at > utcnow() - lost_after(settings),
            )
        )
        if (pending or 0) < settings.webhook_max_outstanding:
            return True
        session.execute(
            update(Audit)
            .where(Audit.id == audit_id)
            .values(webhook_state=WebhookState.DROPPED)
            .execution_options(synchronize_session=False)
        )
    log.warning(
        "audit %s: webhook dropped: tenant %r has %d deliveries pending (WEBHOOK_MAX_OUTSTANDING)",
        audit_id, tenant, pending,
    )  # fmt: skip
    return False


def lost_after(settings: Settings) -> timedelta:
    """How long after its audit ended a pending delivery still counts: its retries' delays and
    deadlines, plus ``LOST_AFTER_S``."""
    attempts = settings.webhook_max_attempts
    retries = settings.webhook_retry_base_s * (2 ** (attempts - 1) - 1)
    return timedelta(seconds=retries + attempts * settings.webhook_timeout_s + LOST_AFTER_S)


def give_up(context: Context, audit_id: uuid.UUID) -> None:
    """Record a pending delivery as failed: its next attempt could not be queued."""
    try:
        with transaction(context.sessions) as session:
            session.execute(
                update(Audit)
                .where(Audit.id == audit_id, Audit.webhook_state == WebhookState.PENDING)
                .values(webhook_state=WebhookState.FAILED)
                .execution_options(synchronize_session=False)
            )
    except Exception as exc:  # it stops counting after lost_after() anyway
        log.warning("audit %s: could not record its webhook as failed: %s", audit_id, exc)
