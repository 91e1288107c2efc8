"""An audit's life, and the only code that writes its status.

    (upload) ──create──▶ queued ──claim──▶ running ──succeed──▶ succeeded
                           ▲   │              │ └──end─────────▶ failed, cancelled
                           │   └──cancel──▶ cancelled           (worker, reconciler)
                           └──give_back──────┘  (worker stopping, worker silent or dead)
    finished ──delete──▶ gone

With ``AUDIT_PARALLEL_BAGS`` an audit also has parts (app/parts.py): its bags and its probe,
each a task that any worker may run. The first part to start makes the audit running, with no
worker of its own; the parts' workers keep its heartbeat. When the last part is done, ``claim``
gives the audit to one worker, which merges the parts and ends it as above.

Each transition is one conditional UPDATE, so two actors racing for an audit (a worker claiming
it while its owner cancels, a reconciler re-queueing it while its slow worker finishes) cannot
both win: the loser sees no row changed. Every write a worker makes is conditional on it still
holding the audit (running, under its name); one that lost it finds out at its next write and
stops, so an audit never ends twice. A transition that ends an audit queues its webhook, after
the commit; one that queues it hands its task to the broker.

Over this project's usual 300 lines on purpose: keeping every transition in one file, beside
its conditions, is what makes the races above checkable.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy import Update, case, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from app.context import Context
from app.db import transaction
from app.outcome import Outcome, store_outcome
from app.queue import send_audit, send_part
from app.services import access
from app.tables import Audit, AuditPart, utcnow
from app.webhook_queue import queue_deliveries
from dataset_audit.schemas import AuditStatus, ErrorCode
from incompat.config import get_preset

log = logging.getLogger(__name__)

RUNNING, QUEUED = AuditStatus.RUNNING, AuditStatus.QUEUED
# Back in the queue: no worker, no heartbeat, and the task to be sent again.
_REQUEUED = {"status": QUEUED, "worker": None, "heartbeat_at": None, "dispatched_at": None}


@dataclass(frozen=True)
class Ending:
    """How an attempt ended, when it ended the audit."""

    status: AuditStatus  # failed or cancelled
    error: str
    code: ErrorCode | None = None


# --- the API's side ------------------------------------------------------------------------------


def create(context: Context, audit: Audit) -> Audit:
    """Insert a queued audit (its upload already stored) and send its task. The tenant's quota is
    checked again under its lock, so concurrent uploads cannot both squeeze in; ``QuotaExceeded``
    when it is full."""
    audit.status, audit.deliveries = QUEUED, []  # loaded, so the answer needs no session
    with transaction(context.sessions) as session:
        access.lock_tenant(session, audit.tenant)
        access.check_quota(
            session, audit.tenant, context.settings, adding_bytes=audit.dataset_bytes
        )
        session.add(audit)
        if context.settings.audit_parallel_bags:
            session.flush()  # the parts' foreign key needs the audit's row
            session.add_all(
                AuditPart(audit_id=audit.id, part=name, progress_total=total)
                for name, total in parts_of(audit.preset)
            )
    # When the broker is down the audit stays queued, undispatched: the reconciler sends it.
    dispatch(context, [audit.id])
    return audit


def cancel(context: Context, audit_id: uuid.UUID) -> None:
    """A queued audit is cancelled at once; a running one is asked to stop, and stops when its
    worker next reports. Both are conditional, so a worker claiming the audit at the same moment
    cannot be overwritten: the audit then counts as running and is asked to stop."""
    with transaction(context.sessions) as session:
        cancelled = _end(
            session, _is(audit_id, QUEUED), AuditStatus.CANCELLED, "cancelled before it started"
        )
        # In parts, no one worker holds it: their next writes find it cancelled, and they stop.
        cancelled = cancelled or _end(
            session, _in_parts(audit_id), AuditStatus.CANCELLED, "cancelled while running"
        )
        if not cancelled:
            session.execute(_update(_is(audit_id, RUNNING)).values(cancel_requested=True))
    _notify(context, cancelled)


def delete_finished(context: Context, audit_id: uuid.UUID) -> bool:
    """Delete a finished audit, then its stored data; False when it is not finished."""
    finished = Audit.status.in_([s for s in AuditStatus if s.finished])
    with transaction(context.sessions) as session:
        deleted = session.execute(delete(Audit).where(Audit.id == audit_id, finished))
    if deleted.rowcount != 1:  # type: ignore[attr-defined]
        return False
    context.storage.delete_prefix(f"audits/{audit_id}")
    return True


def dispatch(context: Context, audit_ids: list[uuid.UUID]) -> int:
    """Send the audits' tasks (an audit in parts: the tasks of its parts not done, or its merge
    once they all are) and record which the broker took; the number of audits sent. An audit or
    part records when the broker took its task (``dispatched_at``), so one whose task never
    arrived (the broker was down) or was forgotten (it restarted empty) is sent again by the
    reconciler. A task sent twice is harmless: the first claim wins and the other finds nothing
    to do."""
    with context.sessions() as session:
        pending = session.execute(
            select(AuditPart.audit_id, AuditPart.part).where(
                AuditPart.audit_id.in_(audit_ids), AuditPart.status != "done"
            )
        ).all()
    parts: dict[uuid.UUID, list[str]] = {}
    for audit_id, part in pending:
        parts.setdefault(audit_id, []).append(part)
    sent: list[uuid.UUID] = []
    sent_parts: list[tuple[uuid.UUID, str]] = []
    for audit_id in audit_ids:
        try:
            for part in parts.get(audit_id, []):
                send_part(context.celery, audit_id, part)
                sent_parts.append((audit_id, part))
            if audit_id not in parts:
                send_audit(context.celery, audit_id)
        except Exception as exc:  # left undispatched: the reconciler tries again
            log.warning("could not queue audit %s: %s", audit_id, exc)
            break  # the broker is down: the rest would fail too
        sent.append(audit_id)
    if sent:
        try:
            with transaction(context.sessions) as session:
                now = utcnow()
                session.execute(
                    _update(Audit.id.in_(sent) & (Audit.status == QUEUED)).values(dispatched_at=now)
                )
                for audit_id, part in sent_parts:
                    session.execute(
                        update(AuditPart)
                        .where(AuditPart.audit_id == audit_id, AuditPart.part == part)
                        .values(dispatched_at=now)
                        .execution_options(synchronize_session=False)
                    )
        except Exception as exc:  # they were sent; at worst the reconciler sends them again
            log.warning("could not record %d dispatched audits: %s", len(sent), exc)
    return len(sent)


# --- the worker's side ---------------------------------------------------------------------------


def claim(context: Context, audit_id: uuid.UUID, *, worker: str) -> Audit | None:
    """Take the audit for this worker: a queued audit, a running one whose worker has stopped
    reporting, or one whose parts are all done (to merge them). None when it is finished,
    cancelled, gone, held by a live worker, or has parts to run, which makes a redelivered task a
    no-op and an audit's merge happen once."""
    now = utcnow()
    stale = now - timedelta(seconds=context.settings.heartbeat_timeout_s)
    merging = (Audit.status == RUNNING) & Audit.worker.is_(None)
    with transaction(context.sessions) as session:
        claimed = session.execute(
            _update(
                (Audit.id == audit_id)
                & ~_has_parts_to_run()
                & or_(
                    Audit.status == QUEUED,
                    merging,
                    (Audit.status == RUNNING) & (Audit.heartbeat_at < stale),
                )
            ).values(
                status=RUNNING,
                worker=worker,
                # The merge continues the parts' attempt.
                attempts=case((merging, Audit.attempts), else_=Audit.attempts + 1),
                started_at=func.coalesce(Audit.started_at, now),
                claimed_at=now,
                heartbeat_at=now,
            )
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return None
        audit = session.get(Audit, audit_id, populate_existing=True)
        session.expunge_all()  # the caller reads its columns after the commit
    return audit


def heartbeat(context: Context, audit_id: uuid.UUID, *, worker: str) -> bool:
    """Record that the worker is alive; False when it no longer holds the audit."""
    with transaction(context.sessions) as session:
        return _beat(session, audit_id, worker)


Progress = Literal["continue", "cancel", "lost"]


def record_progress(
    context: Context, audit_id: uuid.UUID, *, worker: str, stage: str, done: int, total: int
) -> Progress:
    """Store progress and a heartbeat; say whether to go on, stop for a cancel, or stop because
    the worker no longer holds the audit."""
    with transaction(context.sessions) as session:
        stored = session.execute(
            _update(_held(audit_id, worker)).values(
                progress_stage=stage,
                progress_done=done,
                progress_total=total,
                heartbeat_at=utcnow(),
            )
        )
        if stored.rowcount != 1:  # type: ignore[attr-defined]
            return "lost"
        wanted = session.scalar(select(Audit.cancel_requested).where(Audit.id == audit_id))
    return "cancel" if wanted else "continue"


def succeed(context: Context, audit_id: uuid.UUID, *, worker: str, outcome: Outcome) -> bool:
    """Store the outcome and mark the audit succeeded, if the worker still holds it."""
    with transaction(context.sessions) as session:
        # The heartbeat's update locks the row (PostgreSQL) or the database (SQLite) before any
        # read, so a reconciler cannot take the audit away half-way through this write.
        if not _beat(session, audit_id, worker):
            return False
        store_outcome(session, audit_id, outcome)
        ended = session.execute(
            _update(_held(audit_id, worker))
            .values(
                status=AuditStatus.SUCCEEDED,
                finished_at=utcnow(),
                n_flagged=int(outcome.is_flagged.sum()),
                summary=outcome.summary,
                engine_version=outcome.engine_version,
                device=outcome.device,
                error=None,
                error_code=None,
            )
            .returning(Audit.id, Audit.callback_url)
        ).all()
    _notify(context, [(audit_id, url) for audit_id, url in ended])
    return True


def end(context: Context, audit_id: uuid.UUID, *, worker: str, ending: Ending) -> bool:
    """End the audit failed or cancelled, if the worker still holds it."""
    with transaction(context.sessions) as session:
        ended = _end(session, _held(audit_id, worker), ending.status, ending.error, ending.code)
    _notify(context, ended)
    return bool(ended)


def give_back(context: Context, audit_id: uuid.UUID, *, worker: str) -> None:
    """Queue a running audit again, keeping its checkpoint, so that a worker resumes it (this
    worker is stopping)."""
    with transaction(context.sessions) as session:
        session.execute(_update(_held(audit_id, worker)).values(**_REQUEUED))
    dispatch(context, [audit_id])


def give_back_orphans(context: Context, died: Callable[[str], bool]) -> list[uuid.UUID]:
    """Queue again, at once, the running audits whose worker ``died`` says is gone."""
    with context.sessions() as session:
        running = session.execute(
            select(Audit.id, Audit.worker).where(Audit.status == RUNNING, Audit.worker.is_not(None))
        ).all()
    orphans = [(audit_id, name) for audit_id, name in running if name and died(name)]
    for audit_id, name in orphans:
        with transaction(context.sessions) as session:
            session.execute(_update(_held(audit_id, name)).values(**_REQUEUED))
        log.warning("audit %s: its worker %s died; queued again", audit_id, name)
    dispatch(context, [audit_id for audit_id, _ in orphans])
    return [audit_id for audit_id, _ in orphans]


# --- an audit in parts (app/parts.py moves the parts) ------------------------------------------


def start_in_parts(session: Session, audit_id: uuid.UUID, *, part_attempt: int) -> bool:
    """A part starts, for the ``part_attempt``-th time: the audit runs, unless it ended, is being
    merged, or was asked to stop. Its attempts are the most any of its parts has had (a queued
    audit starts another). Locks the audit's row for the rest of the transaction."""
    now = utcnow()
    queued = Audit.status == QUEUED
    attempts = case((queued, Audit.attempts + 1), else_=Audit.attempts)
    started = session.execute(
        _update(
            (Audit.id == audit_id)
            & (queued | _in_parts(audit_id))
            & Audit.worker.is_(None)
            & ~Audit.cancel_requested
        ).values(
            status=RUNNING,
            attempts=case((attempts < part_attempt, part_attempt), else_=attempts),
            started_at=func.coalesce(Audit.started_at, now),
            claimed_at=case((queued, now), else_=Audit.claimed_at),
            heartbeat_at=now,
            dispatched_at=None,
        )
    )
    return bool(started.rowcount == 1)  # type: ignore[attr-defined]


def beat_in_parts(session: Session, audit_id: uuid.UUID, **progress: object) -> bool:
    """A part's worker is alive (and the audit's progress, when given); False when the audit no
    longer runs in parts. Locks the audit's row for the rest of the transaction."""
    beat = session.execute(_update(_in_parts(audit_id)).values(heartbeat_at=utcnow(), **progress))
    return bool(beat.rowcount == 1)  # type: ignore[attr-defined]


def end_in_parts(context: Context, audit_id: uuid.UUID, ending: Ending) -> bool:
    """End an audit running in parts, failed or cancelled (a part's error, its cancel)."""
    with transaction(context.sessions) as session:
        ended = _end(session, _in_parts(audit_id), ending.status, ending.error, ending.code)
    _notify(context, ended)
    return bool(ended)


# --- the reconciler's side -----------------------------------------------------------------------


def recover_silent(context: Context) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Re-queue the running audits whose worker has written no heartbeat for
    ``HEARTBEAT_TIMEOUT_S`` (killed, out of memory, its machine gone), or fail them after
    ``MAX_ATTEMPTS`` starts; (re-queued, failed). The caller sends the re-queued ones. An audit
    in parts is not held by one worker: ``parts.recover_silent`` looks after its parts."""
    settings = context.settings
    stale = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
    with context.sessions() as session:
        silent = session.execute(
            select(Audit.id, Audit.attempts, Audit.worker).where(
                Audit.status == RUNNING, Audit.heartbeat_at < stale, Audit.worker.is_not(None)
            )
        ).all()
    requeued: list[uuid.UUID] = []
    failed: list[uuid.UUID] = []
    for audit_id, attempts, worker in silent:
        still_silent = _is(audit_id, RUNNING) & (Audit.heartbeat_at < stale)
        if attempts >= settings.max_attempts:
            reason = (
                f"its worker stopped responding on each of {attempts} attempts (last: {worker}); "
                "the dataset may need more memory than a worker has"
            )
            with transaction(context.sessions) as session:
                ended = _end(session, still_silent, AuditStatus.FAILED, reason, "worker_lost")
            _notify(context, ended)
            failed += [audit_id for audit_id, _ in ended]
            continue
        with transaction(context.sessions) as session:
            taken = session.execute(_update(still_silent).values(**_REQUEUED))
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            log.warning("audit %s: worker %s went silent; queued again", audit_id, worker)
            requeued.append(audit_id)
    return requeued, failed


def fail_overdue(context: Context, grace_s: float) -> list[uuid.UUID]:
    """Fail the running audits claimed more than ``AUDIT_TIME_LIMIT_S`` and ``grace_s`` ago
    whose worker, though alive, has not stopped them."""
    limit = context.settings.audit_time_limit_s
    overdue = (Audit.status == RUNNING) & (
        Audit.claimed_at < utcnow() - timedelta(seconds=limit + grace_s)
    )
    reason = f"stopped after the time limit of {limit:.0f} s (AUDIT_TIME_LIMIT_S)"
    with transaction(context.sessions) as session:
        ended = _end(session, overdue, AuditStatus.FAILED, reason, "time_limit")
    _notify(context, ended)
    return [audit_id for audit_id, _ in ended]


def undispatched(context: Context, *, settled_s: float, everything: bool) -> list[uuid.UUID]:
    """Queued audits to send: those the broker has not taken, created over ``settled_s`` ago
    (the API sends its own right after creating them), or all of them when the broker has lost
    its tasks."""
    query = select(Audit.id).where(Audit.status == QUEUED)
    if not everything:
        settled = utcnow() - timedelta(seconds=settled_s)
        query = query.where(Audit.dispatched_at.is_(None), Audit.created_at < settled)
    with context.sessions() as session:
        return list(session.scalars(query.order_by(Audit.created_at)))


# --- shared --------------------------------------------------------------------------------------


def _update(where: ColumnElement[bool]) -> Update:
    # No session objects to keep in step: the callers read what they need afterwards.
    return update(Audit).where(where).execution_options(synchronize_session=False)


def _is(audit_id: uuid.UUID, status: AuditStatus) -> ColumnElement[bool]:
    return (Audit.id == audit_id) & (Audit.status == status)


def _held(audit_id: uuid.UUID, worker: str) -> ColumnElement[bool]:
    return _is(audit_id, RUNNING) & (Audit.worker == worker)


def _in_parts(audit_id: uuid.UUID) -> ColumnElement[bool]:
    """Running in parts: no single worker holds it (until the merge is claimed)."""
    return _is(audit_id, RUNNING) & Audit.worker.is_(None)


def _has_parts_to_run() -> ColumnElement[bool]:
    return exists().where(AuditPart.audit_id == Audit.id, AuditPart.status != "done")


def parts_of(preset: str) -> list[tuple[str, int]]:
    """The parts of an audit run with ``preset`` and their progress totals: one per bag (its
    learners), and the probe if it has one."""
    config = get_preset(preset)
    bags = [(f"bag-{k}", config.clusters_per_bag) for k in range(config.bags)]
    return bags + ([("probe", 1)] if config.probe_steps else [])


def _beat(session: Session, audit_id: uuid.UUID, worker: str) -> bool:
    beat = session.execute(_update(_held(audit_id, worker)).values(heartbeat_at=utcnow()))
    return bool(beat.rowcount == 1)  # type: ignore[attr-defined]


_Ended = list[tuple[uuid.UUID, str | None]]


def _end(
    session: Session,
    where: ColumnElement[bool],
    status: AuditStatus,
    error: str,
    code: ErrorCode | None = None,
) -> _Ended:
    """End the audits ``where`` selects; their ids and callback URLs."""
    rows = session.execute(
        _update(where)
        .values(status=status, finished_at=utcnow(), error=error, error_code=code, worker=None)
        .returning(Audit.id, Audit.callback_url)
    ).all()
    for audit_id, _ in rows:
        log.info("audit %s: %s: %s", audit_id, status, error)
    return [(audit_id, url) for audit_id, url in rows]


def _notify(context: Context, ended: _Ended) -> None:
    """Queue the webhooks of audits that just ended (after their transaction committed), within
    their tenants' bound on pending deliveries."""
    queue_deliveries(context, ended)
