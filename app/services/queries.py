"""Reading audits and their results. Status changes are ``app.lifecycle``'s."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.tables import Audit, AuditScores, FlaggedSample
from app.views import to_read
from dataset_audit.schemas import AuditRead, AuditStatus, FlagKind


def get_audit(session: Session, audit_id: uuid.UUID, *, tenant: str) -> Audit | None:
    """The tenant's audit; None when there is none, or it is another tenant's. One query with
    the tenant in it, so another tenant's audit is not even loaded: it answers as fast as a
    missing one, and its id's existence cannot be timed."""
    return session.scalars(
        select(Audit).where(Audit.id == audit_id, Audit.tenant == tenant)
    ).one_or_none()


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
    session: Session, sha256: str, *, tenant: str, preset: str, seed: int, image_size: int | None
) -> AuditRead | None:
    """The tenant's newest audit of this content with this preset, seed and image_size that has
    succeeded or may still: auditing it again would give the same result."""
    audit = session.scalars(
        select(Audit)
        .where(
            Audit.tenant == tenant,
            Audit.dataset_sha256 == sha256,
            Audit.preset == preset,
            Audit.seed == seed,
            Audit.image_size == image_size,  # IS NULL for None
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
