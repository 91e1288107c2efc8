"""Running an audit to its end without Celery, whichever way it was queued."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from app.context import Context
from app.tables import Audit, AuditPart
from dataset_audit.schemas import AuditStatus
from worker.runner import run_audit, run_part


def run_to_the_end(context: Context, audit_id: uuid.UUID) -> AuditStatus | None:
    """Each part of an audit run in parts (none for one run as one task), then the audit; the
    status it ends with (None: no such audit)."""
    with context.sessions() as session:
        pending = session.scalars(
            select(AuditPart.part).where(AuditPart.audit_id == audit_id, AuditPart.status != "done")
        ).all()
    for part in pending:
        run_part(context, audit_id, part)
    run_audit(context, audit_id)
    with context.sessions() as session:
        audit = session.get(Audit, audit_id)
        return None if audit is None else audit.status
