"""An audit's parts (``AUDIT_PARALLEL_BAGS``): each bag's clustering and the trigger-group probe
are a task each, so several workers share one audit, and the merge (vote, refinement, verdict)
is one more task once they are all done.

    queued ──claim──▶ running ──finish──▶ done    (the last one done sends the merge)
      ▲                  │
      └──give_back───────┘  (its worker stopping, dead or silent; after MAX_ATTEMPTS starts
                             the audit fails)

Every write here runs in a transaction that first updates the audit's row (``lifecycle``'s
``*_in_parts``), which both checks that the audit still runs in parts (not cancelled, failed or
being merged) and locks it: two parts finishing at once are serialised, so the second sees the
first done and exactly one of them sends the merge. A part's writes are also conditional on its
worker still holding it. The merge itself is claimed like any audit (``lifecycle.claim``), once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import ColumnElement, Update, func, select, update

from app import lifecycle
from app.context import Context
from app.db import transaction
from app.queue import send_part
from app.tables import Audit, AuditPart, utcnow
from dataset_audit.schemas import AuditStatus

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE = "queued", "running", "done"
_REQUEUED = {"status": QUEUED, "worker": None, "heartbeat_at": None, "dispatched_at": None}


class _Taken(Exception):
    """The part is not this worker's to take: roll the audit's start back."""


def names(context: Context, audit_id: uuid.UUID) -> list[str]:
    """The audit's parts, in order (bags first, then the probe); none for an audit run as one
    task."""
    with context.sessions() as session:
        found = session.scalars(select(AuditPart.part).where(AuditPart.audit_id == audit_id))
        return sorted(found, key=lambda name: (name == "probe", name))


def claim(context: Context, audit_id: uuid.UUID, part: str, *, worker: str) -> Audit | None:
    """Take a queued part, or a running one whose worker went silent; None when the part is done
    or held by a live worker, or the audit does not run in parts (ended, cancelled, merging)."""
    now = utcnow()
    stale = now - timedelta(seconds=context.settings.heartbeat_timeout_s)
    try:
        with transaction(context.sessions) as session:
            before = session.scalar(
                select(AuditPart.attempts).where(
                    AuditPart.audit_id == audit_id, AuditPart.part == part
                )
            )
            if before is None or not lifecycle.start_in_parts(
                session, audit_id, part_attempt=before + 1
            ):
                return None
            free = (AuditPart.status == QUEUED) | (
                (AuditPart.status == RUNNING) & (AuditPart.heartbeat_at < stale)
            )
            taken = session.execute(
                _update(audit_id, part, free).values(
                    status=RUNNING,
                    worker=worker,
                    attempts=AuditPart.attempts + 1,
                    heartbeat_at=now,
                    progress_done=0,
                )
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise _Taken
            audit = session.get(Audit, audit_id, populate_existing=True)
            session.expunge_all()
    except _Taken:
        return None
    return audit


def heartbeat(context: Context, audit_id: uuid.UUID, part: str, *, worker: str) -> bool:
    """Record that the part's worker is alive; False when it no longer holds the part."""
    with transaction(context.sessions) as session:
        if not lifecycle.beat_in_parts(session, audit_id):
            return False
        beat = session.execute(_update(audit_id, part, _held(worker)).values(heartbeat_at=utcnow()))
        return bool(beat.rowcount == 1)  # type: ignore[attr-defined]


def record_progress(
    context: Context, audit_id: uuid.UUID, part: str, *, worker: str, done: int, total: int
) -> lifecycle.Progress:
    """Store the part's progress; the audit's is the sum of its bags' learners. "lost" when the
    part is no longer this worker's or the audit no longer runs (a cancel ends it at once)."""
    with transaction(context.sessions) as session:
        if not lifecycle.beat_in_parts(session, audit_id):
            return "lost"
        stored = session.execute(
            _update(audit_id, part, _held(worker)).values(
                heartbeat_at=utcnow(), progress_done=done, progress_total=total
            )
        )
        if stored.rowcount != 1:  # type: ignore[attr-defined]
            return "lost"
        done_sum, total_sum = session.execute(
            select(func.sum(AuditPart.progress_done), func.sum(AuditPart.progress_total)).where(
                AuditPart.audit_id == audit_id, AuditPart.part.like("bag-%")
            )
        ).one()
        lifecycle.beat_in_parts(
            session, audit_id, progress_stage="clustering",
            progress_done=done_sum or 0, progress_total=total_sum or 0,
        )  # fmt: skip
    return "continue"


def finish(context: Context, audit_id: uuid.UUID, part: str, *, worker: str) -> bool:
    """Mark the part done (its result is stored); the last part done sends the merge. False
    when the worker no longer held the part."""
    with transaction(context.sessions) as session:
        if not lifecycle.beat_in_parts(session, audit_id):
            return False
        finished = session.execute(
            _update(audit_id, part, _held(worker)).values(
                status=DONE, worker=None, progress_done=AuditPart.progress_total
            )
        )
        if finished.rowcount != 1:  # type: ignore[attr-defined]
            return False
        left = session.scalar(
            select(func.count()).where(AuditPart.audit_id == audit_id, AuditPart.status != DONE)
        )
    if left == 0:
        log.info("audit %s: every part is done; queueing the merge", audit_id)
        lifecycle.dispatch(context, [audit_id])
    return True


def give_back(context: Context, audit_id: uuid.UUID, part: str, *, worker: str) -> None:
    """Queue the part again, keeping its checkpoint (its worker is stopping)."""
    with transaction(context.sessions) as session:
        session.execute(_update(audit_id, part, _held(worker)).values(**_REQUEUED))
    send(context, [(audit_id, part)])


def end(context: Context, audit_id: uuid.UUID, ending: lifecycle.Ending) -> bool:
    """A part's error or cancel ends the whole audit; its other parts stop at their next write."""
    return lifecycle.end_in_parts(context, audit_id, ending)


def give_back_orphans(context: Context, died: Callable[[str], bool]) -> list[tuple[uuid.UUID, str]]:
    """Queue again, at once, the running parts whose worker ``died`` says is gone."""
    with context.sessions() as session:
        running = session.execute(
            select(AuditPart.audit_id, AuditPart.part, AuditPart.worker).where(
                AuditPart.status == RUNNING
            )
        ).all()
    orphans: list[tuple[uuid.UUID, str]] = []
    for audit_id, part, name in running:
        if not (name and died(name)):
            continue
        with transaction(context.sessions) as session:
            session.execute(_update(audit_id, part, _held(name)).values(**_REQUEUED))
        log.warning("audit %s: the worker %s of its %s died; queued again", audit_id, name, part)
        orphans.append((audit_id, part))
    send(context, orphans)
    return orphans


def recover_silent(context: Context) -> tuple[list[tuple[uuid.UUID, str]], list[uuid.UUID]]:
    """The reconciler's pass over audits in parts: re-queue (and send) the running parts whose
    worker wrote no heartbeat for ``HEARTBEAT_TIMEOUT_S``, or fail their audit once a part has
    had ``MAX_ATTEMPTS`` starts; send the merge of an audit whose parts are all done but which
    no one merged (its last part's worker died before sending it, or the broker lost it).
    Returns (re-queued parts, failed audits)."""
    settings = context.settings
    stale = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
    in_parts = (Audit.status == AuditStatus.RUNNING) & Audit.worker.is_(None)
    with context.sessions() as session:
        silent = session.execute(
            select(AuditPart.audit_id, AuditPart.part, AuditPart.attempts, AuditPart.worker)
            .join(Audit, Audit.id == AuditPart.audit_id)
            .where(in_parts, AuditPart.status == RUNNING, AuditPart.heartbeat_at < stale)
        ).all()
        unmerged = session.scalars(
            select(Audit.id).where(
                in_parts,
                Audit.heartbeat_at < stale,
                ~select(AuditPart.audit_id)
                .where(AuditPart.audit_id == Audit.id, AuditPart.status != DONE)
                .exists(),
            )
        ).all()
    requeued: list[tuple[uuid.UUID, str]] = []
    failed: list[uuid.UUID] = []
    for audit_id, part, attempts, worker in silent:
        if attempts >= settings.max_attempts:
            reason = (
                f"the worker of its {part} stopped responding on each of {attempts} attempts "
                f"(last: {worker}); the dataset may need more memory than a worker has"
            )
            ending = lifecycle.Ending(AuditStatus.FAILED, reason, "worker_lost")
            if lifecycle.end_in_parts(context, audit_id, ending):
                failed.append(audit_id)
            continue
        still_silent = (AuditPart.status == RUNNING) & (AuditPart.heartbeat_at < stale)
        with transaction(context.sessions) as session:
            taken = session.execute(_update(audit_id, part, still_silent).values(**_REQUEUED))
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            log.warning("audit %s: the worker %s of its %s went silent; queued again",
                        audit_id, worker, part)  # fmt: skip
            requeued.append((audit_id, part))
    send(context, requeued)
    if unmerged:
        lifecycle.dispatch(context, list(unmerged))
    return requeued, failed


def undispatched(context: Context, *, everything: bool) -> list[tuple[uuid.UUID, str]]:
    """Queued parts of running audits to send: those the broker never took, or all of them when
    it has lost its tasks (a fresh audit's parts are sent with the audit itself)."""
    query = (
        select(AuditPart.audit_id, AuditPart.part)
        .join(Audit, Audit.id == AuditPart.audit_id)
        .where(Audit.status == AuditStatus.RUNNING, AuditPart.status == QUEUED)
    )
    if not everything:
        query = query.where(AuditPart.dispatched_at.is_(None))
    with context.sessions() as session:
        return [(audit_id, part) for audit_id, part in session.execute(query).all()]


def send(context: Context, parts: list[tuple[uuid.UUID, str]]) -> int:
    """Send the parts' tasks and record which the broker took; the number sent."""
    sent: list[tuple[uuid.UUID, str]] = []
    for audit_id, part in parts:
        try:
            send_part(context.celery, audit_id, part)
        except Exception as exc:  # left undispatched: the reconciler tries again
            log.warning("could not queue audit %s's %s: %s", audit_id, part, exc)
            break
        sent.append((audit_id, part))
    try:
        with transaction(context.sessions) as session:
            for audit_id, part in sent:
                session.execute(
                    _update(audit_id, part, AuditPart.status == QUEUED).values(
                        dispatched_at=utcnow()
                    )
                )
    except Exception as exc:  # they were sent; at worst the reconciler sends them again
        log.warning("could not record %d dispatched parts: %s", len(sent), exc)
    return len(sent)


def _update(audit_id: uuid.UUID, part: str, where: ColumnElement[bool]) -> Update:
    return (
        update(AuditPart)
        .where(AuditPart.audit_id == audit_id, AuditPart.part == part, where)
        .execution_options(synchronize_session=False)
    )


def _held(worker: str) -> ColumnElement[bool]:
    return (AuditPart.status == RUNNING) & (AuditPart.worker == worker)
