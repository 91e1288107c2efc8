"""A finished audit's results as the worker hands them over, and how they are stored."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from app.tables import AuditScores, FlaggedSample


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
    paths: Sequence[str | None] | None  # per index: where the image came from
    summary: dict[str, Any]
    engine_version: str
    device: str


def store_outcome(session: Session, audit_id: uuid.UUID, outcome: Outcome) -> None:
    """The audit's per-sample rows: every score in one blob, a row per flagged sample with its
    positions in each order (see ``queries.flagged_page``)."""
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
            "audit_id": audit_id,
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
            "path": outcome.paths[int(i)] if outcome.paths is not None else None,
        }
        for ordinal, i in enumerate(flagged)
    ]
    session.execute(delete(FlaggedSample).where(FlaggedSample.audit_id == audit_id))
    session.execute(delete(AuditScores).where(AuditScores.audit_id == audit_id))
    if rows:
        session.execute(insert(FlaggedSample), rows)
    session.add(
        AuditScores(audit_id=audit_id, scores=outcome.scores.astype("<f4", copy=False).tobytes())
    )


def _dense(ranks: np.ndarray) -> np.ndarray:
    """0..n-1 in the order of ``ranks``."""
    dense = np.empty(ranks.size, dtype=np.int64)
    dense[np.argsort(ranks, kind="stable")] = np.arange(ranks.size)
    return dense
