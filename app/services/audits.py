"""Everything the API and the worker do to audits in the database. Functions here never commit:
the caller owns the transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any, Literal

import numpy as np
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from app.tables import Audit, AuditScores, FlaggedSample, utcnow
from app.views import to_read
from dataset_audit.schemas import AuditRead, AuditStatus, FlagKind


def get_audit(session: Session, audit_id: uuid.UUID, *, tenant: str) -> Audit | None:
    """The tenant's audit; None when there is none, or it is another tenant's."""
    audit = session.get(Audit, audit_id)
    return audit if audit is not None and audit.tenant == tenant else None


def list_audits(
    session: Session, *, tenant: str, limit: int, offset: int, sha256: str | None = None
) -> tuple[list[Audit], int]:
    query = select(Audit).where(Audit.tenant == tenant)
    if sha256 is not None:
        query = query.where(Audit.dataset_sha256 == sha256)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Audit.created_at.desc(), Audit.id).limit(limit).offset(offset)
    )
    return list(rows), total


REUSABLE = (AuditStatus.QUEUED, AuditStatus.RUNNING, AuditStatus.SUCCEEDED)


def find_reusable(
    session: Session, sha256: str, *, tenant: str, preset: str, seed: int
) -> AuditRead | None:
    """The tenant's newest audit of this content with this preset and seed that has succeeded or
    may still: auditing it again would give the same result."""
    audit = session.scalars(
        select(Audit)
        .where(
            Audit.tenant == tenant,
            Audit.dataset_sha256 == sha256,
            Audit.preset == preset,
            Audit.seed == seed,
            Audit.status.in_(REUSABLE),
        )
        .order_by(Audit.created_at.desc())
        .limit(1)
    ).first()
    return None if audit is None else to_read(audit)


@dataclass(frozen=True, slots=True)
class FlaggedRow:
    index: int
    rank: int
    kind: str
    score: float
    label: int
    voted_label: int | None
    label_prob: float
    path: str | None


_FLAGGED_COLUMNS = tuple(getattr(FlaggedSample, f.name) for f in fields(FlaggedRow))


def flagged_page(
    session: Session,
    audit: Audit,
    *,
    sort: Literal["index", "score"],
    limit: int,
    offset: int,
    kind: FlagKind | None = None,
) -> list[FlaggedRow]:
    """One page of flagged samples (of one kind, or all), as plain rows. Each order is a dense
    numbering of the flagged samples (``ordinal`` by index, ``rank`` by suspicion; ``kind_*``
    within the kind), so a page is a range of an index rather than an OFFSET that steps over
    every row before it."""
    columns: list[Any] = list(_FLAGGED_COLUMNS)
    if kind is None:
        position = FlaggedSample.ordinal if sort == "index" else FlaggedSample.rank
        where = FlaggedSample.audit_id == audit.id
    else:
        position = FlaggedSample.kind_ordinal if sort == "index" else FlaggedSample.kind_rank
        where = (FlaggedSample.audit_id == audit.id) & (FlaggedSample.kind == kind)
        columns[columns.index(FlaggedSample.rank)] = FlaggedSample.kind_rank
    query = select(*columns).where(where, position >= offset).order_by(position).limit(limit)
    return [FlaggedRow(*row) for row in session.execute(query)]


def count_flagged(session: Session, audit: Audit, kind: FlagKind | None) -> int:
    if kind is None:
        return audit.n_flagged or 0
    return int(
        session.scalar(
            select(func.count()).where(
                FlaggedSample.audit_id == audit.id, FlaggedSample.kind == kind
            )
        )
        or 0
    )


def flagged_votes(session: Session, audit: Audit) -> dict[tuple[int, int], int]:
    """How many flagged samples of each given label the learners voted for each other label."""
    rows = session.execute(
        select(FlaggedSample.label, FlaggedSample.voted_label, func.count())
        .where(FlaggedSample.audit_id == audit.id, FlaggedSample.voted_label.is_not(None))
        .group_by(FlaggedSample.label, FlaggedSample.voted_label)
    )
    return {(int(label), int(voted)): int(n) for label, voted, n in rows if voted is not None}


def scores(session: Session, audit: Audit) -> np.ndarray | None:
    blob = session.scalar(select(AuditScores.scores).where(AuditScores.audit_id == audit.id))
    return None if blob is None else np.frombuffer(blob, dtype="<f4")


def request_cancel(session: Session, audit: Audit) -> None:
    """A queued audit is cancelled at once; a running one when its worker next reports. Both
    are conditional updates, so a worker claiming the audit at the same moment cannot be
    overwritten: the audit then counts as running and is asked to stop."""
    cancelled = session.execute(
        update(Audit)
        .where(Audit.id == audit.id, Audit.status == AuditStatus.QUEUED)
        .values(
            status=AuditStatus.CANCELLED, finished_at=utcnow(), error="cancelled before it started"
        )
    )
    if cancelled.rowcount != 1:  # type: ignore[attr-defined]
        session.execute(
            update(Audit)
            .where(Audit.id == audit.id, Audit.status == AuditStatus.RUNNING)
            .values(cancel_requested=True)
        )


def delete_audit(session: Session, audit: Audit) -> None:
    session.delete(audit)


# The worker's side. Every write a worker makes is conditional on it still holding the audit
# (running, under its name): one that was taken for lost and re-queued, or cancelled, finds out
# at its next write and stops, so an audit never ends twice.


def claim(
    session: Session, audit_id: uuid.UUID, *, worker: str, heartbeat_timeout_s: float
) -> Audit | None:
    """Take the audit for this worker, atomically: a queued audit, or a running one whose worker
    has stopped reporting. None when it is finished, cancelled, gone, or held by a live worker,
    which makes a redelivered task a no-op."""
    now = utcnow()
    stale = now - timedelta(seconds=heartbeat_timeout_s)
    claimed = session.execute(
        update(Audit)
        .where(
            Audit.id == audit_id,
            or_(
                Audit.status == AuditStatus.QUEUED,
                (Audit.status == AuditStatus.RUNNING) & (Audit.heartbeat_at < stale),
            ),
        )
        .values(
            status=AuditStatus.RUNNING,
            worker=worker,
            attempts=Audit.attempts + 1,
            started_at=func.coalesce(Audit.started_at, now),
            claimed_at=now,
            heartbeat_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(Audit, audit_id, populate_existing=True)


def _held(audit_id: uuid.UUID, worker: str) -> ColumnElement[bool]:
    return (Audit.id == audit_id) & (Audit.worker == worker) & (Audit.status == AuditStatus.RUNNING)


def heartbeat(session: Session, audit_id: uuid.UUID, *, worker: str) -> bool:
    """Record that the worker is alive; False when it no longer holds the audit."""
    beat = session.execute(
        update(Audit)
        .where(_held(audit_id, worker))
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(beat.rowcount == 1)  # type: ignore[attr-defined]


def hold(session: Session, audit_id: uuid.UUID, *, worker: str) -> Audit | None:
    """The audit, locked for this transaction, if the worker still holds it. The lock comes from
    an update (a row lock on PostgreSQL, the write lock on SQLite) before any read, so a
    reconciler cannot take the audit away half-way through the worker's last write."""
    if not heartbeat(session, audit_id, worker=worker):
        return None
    return session.get(Audit, audit_id, populate_existing=True)


def release(session: Session, audit_id: uuid.UUID, *, worker: str) -> None:
    """Give a running audit back to the queue (its worker is stopping)."""
    session.execute(
        update(Audit)
        .where(_held(audit_id, worker))
        .values(status=AuditStatus.QUEUED, worker=None, heartbeat_at=None, dispatched_at=None)
        .execution_options(synchronize_session=False)
    )


def mark_dispatched(session: Session, audit_ids: list[uuid.UUID]) -> None:
    """The broker has taken these audits' tasks."""
    session.execute(
        update(Audit)
        .where(Audit.id.in_(audit_ids), Audit.status == AuditStatus.QUEUED)
        .values(dispatched_at=utcnow())
        .execution_options(synchronize_session=False)
    )


Progress = Literal["continue", "cancel", "lost"]


def record_progress(
    session: Session, audit_id: uuid.UUID, *, worker: str, stage: str, done: int, total: int
) -> Progress:
    """Store progress and a heartbeat; say whether to go on, stop for a cancel, or stop because
    the worker no longer holds the audit."""
    stored = session.execute(
        update(Audit)
        .where(_held(audit_id, worker))
        .values(
            progress_stage=stage, progress_done=done, progress_total=total, heartbeat_at=utcnow()
        )
        .execution_options(synchronize_session=False)
    )
    if stored.rowcount != 1:  # type: ignore[attr-defined]
        return "lost"
    wanted = session.scalar(select(Audit.cancel_requested).where(Audit.id == audit_id))
    return "cancel" if wanted else "continue"


@dataclass(frozen=True)
class Outcome:
    """A finished audit's per-sample results, in the upload's label space and sample order."""

    scores: np.ndarray  # float32, N
    is_flagged: np.ndarray  # bool, N
    labels: np.ndarray  # int64, N
    voted_label: np.ndarray  # int64, N (-1: no vote)
    label_prob: np.ndarray  # float32, N
    suspicion_order: np.ndarray  # indices, most suspicious first
    is_suspected_poison: np.ndarray  # bool, N: flagged and in a group the verdict implicates
    paths: list[str] | None
    summary: dict[str, Any]
    engine_version: str
    device: str


def save_outcome(session: Session, audit: Audit, outcome: Outcome) -> None:
    flagged = np.flatnonzero(outcome.is_flagged)
    rank = np.empty(outcome.scores.size, dtype=np.int64)
    rank[outcome.suspicion_order] = np.arange(outcome.scores.size)
    dense_rank = _dense(rank[flagged])  # ranks among flagged: 0..F-1
    suspected = outcome.is_suspected_poison[flagged]
    kind_ordinal = np.empty(flagged.size, dtype=np.int64)
    kind_rank = np.empty(flagged.size, dtype=np.int64)
    for members in (suspected, ~suspected):
        kind_ordinal[members] = np.arange(int(members.sum()))
        kind_rank[members] = _dense(rank[flagged][members])
    rows = [
        {
            "audit_id": audit.id,
            "index": int(i),
            "ordinal": ordinal,
            "rank": int(dense_rank[ordinal]),
            "kind": "suspected_poison" if suspected[ordinal] else "label_issue",
            "kind_ordinal": int(kind_ordinal[ordinal]),
            "kind_rank": int(kind_rank[ordinal]),
            "score": float(outcome.scores[i]),
            "label": int(outcome.labels[i]),
            "voted_label": int(outcome.voted_label[i]) if outcome.voted_label[i] >= 0 else None,
            "label_prob": float(outcome.label_prob[i]),
            "path": outcome.paths[i] if outcome.paths is not None else None,
        }
        for ordinal, i in enumerate(flagged)
    ]
    session.execute(delete(FlaggedSample).where(FlaggedSample.audit_id == audit.id))
    session.execute(delete(AuditScores).where(AuditScores.audit_id == audit.id))
    if rows:
        session.execute(insert(FlaggedSample), rows)
    session.add(
        AuditScores(audit_id=audit.id, scores=outcome.scores.astype("<f4", copy=False).tobytes())
    )
    audit.status = AuditStatus.SUCCEEDED
    audit.finished_at = utcnow()
    audit.n_flagged = int(flagged.size)
    audit.summary = outcome.summary
    audit.engine_version = outcome.engine_version
    audit.device = outcome.device
    audit.error = None


def _dense(ranks: np.ndarray) -> np.ndarray:
    """0..n-1 in the order of ``ranks``."""
    dense = np.empty(ranks.size, dtype=np.int64)
    dense[np.argsort(ranks, kind="stable")] = np.arange(ranks.size)
    return dense


def finish(session: Session, audit: Audit, status: AuditStatus, error: str | None = None) -> None:
    audit.status = status
    audit.finished_at = utcnow()
    audit.error = error
