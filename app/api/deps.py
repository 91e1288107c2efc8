"""Dependencies the routes declare."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.context import Context
from app.models import Audit
from app.services import audits as service


def get_context(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


ContextDep = Annotated[Context, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    with context.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_audit_or_404(audit_id: uuid.UUID, session: SessionDep) -> Audit:
    audit = service.get_audit(session, audit_id)
    if audit is None:
        raise HTTPException(404, f"no audit {audit_id}")
    return audit


AuditDep = Annotated[Audit, Depends(get_audit_or_404)]
