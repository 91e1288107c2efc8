"""What the routes share: the process's context, and running database work in one thread.

Routes are ``async`` and hand all their database work to one worker thread with
``in_session``, at most ``API_DB_THREADS`` at a time: past that, requests wait in the event loop
rather than as threads contending for the interpreter, so a burst drains at full speed.

(A sync session dependency would hold a pooled connection across FastAPI's separate threadpool
hops, dependency then endpoint; with more requests in flight than threads plus pooled
connections, every thread then waits for a connection held by a request that waits for a thread,
until the pool times out.)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import anyio
from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.context import Context
from app.services import queries
from app.tables import Audit
from dataset_audit.schemas import AuditStatus

T = TypeVar("T")
P = ParamSpec("P")


def get_context(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


ContextDep = Annotated[Context, Depends(get_context)]


async def in_session(context: Context, work: Callable[[Session], T], *, write: bool = False) -> T:
    """Run ``work`` in a worker thread on a session that ends with it: a read-only one (no
    transaction round trips) unless ``write``."""

    def run() -> T:
        with (context.sessions if write else context.reads)() as session:
            return work(session)

    return await anyio.to_thread.run_sync(run, limiter=context.db_threads)


async def in_thread(context: Context, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``work(*args)`` in a worker thread, counted against ``API_DB_THREADS`` like ``in_session``:
    for service calls that own their transactions."""
    return await anyio.to_thread.run_sync(lambda: work(*args, **kwargs), limiter=context.db_threads)


async def with_audit(
    context: Context,
    tenant: str,
    audit_id: uuid.UUID,
    work: Callable[[Session, Audit], T],
    *,
    write: bool = False,
) -> T:
    """``in_session``, with the tenant's audit loaded first (404 when it has none: another
    tenant's audit is not told apart from a missing one)."""

    def run(session: Session) -> T:
        audit = queries.get_audit(session, audit_id, tenant=tenant)
        if audit is None:
            raise HTTPException(404, f"no audit {audit_id}")
        return work(session, audit)

    return await in_session(context, run, write=write)


def require_succeeded(audit: Audit) -> None:
    """409 unless the audit has results."""
    if audit.status != AuditStatus.SUCCEEDED:
        detail = f"the audit is {audit.status}; results exist once it has succeeded"
        if audit.error:
            detail += f" ({audit.error})"
        raise HTTPException(409, detail)
