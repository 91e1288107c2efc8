"""How an audit looks from outside: the API's answers and the webhook's payload."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.tables import Audit
from dataset_audit.schemas import (
    AuditLinks,
    AuditRead,
    AuditSummary,
    ClassCounts,
    Dataset,
    Delivery,
    ImplicatedGroup,
    Progress,
    TriggerGroup,
    Verdict,
    Webhook,
    WebhookState,
)


def to_read(audit: Audit) -> AuditRead:
    total = audit.progress_total
    return AuditRead(
        id=audit.id,
        name=audit.name,
        status=audit.status,
        preset=audit.preset,
        seed=audit.seed,
        image_size=audit.image_size,
        dataset=Dataset(
            format=audit.dataset_format,  # type: ignore[arg-type]
            filename=audit.dataset_filename,
            sha256=audit.dataset_sha256,
            bytes=audit.dataset_bytes,
            n_samples=audit.n_samples,
            n_classes=audit.n_classes,
            image_shape=audit.image_shape,
            classes=audit.classes,
        ),
        progress=Progress(
            stage=audit.progress_stage,
            done=audit.progress_done,
            total=total,
            percent=round(100.0 * audit.progress_done / total, 1) if total else 0.0,
        ),
        cancel_requested=audit.cancel_requested,
        created_at=audit.created_at,
        started_at=audit.started_at,
        finished_at=audit.finished_at,
        error=audit.error,
        error_code=audit.error_code,  # type: ignore[arg-type]
        engine_version=audit.engine_version,
        attempts=audit.attempts,
        estimate=audit.estimate,  # type: ignore[arg-type]
        summary=_summary(audit),
        webhook=_webhook(audit),
        links=_links(audit),
    )


def _summary(audit: Audit) -> AuditSummary | None:
    if audit.summary is None or audit.n_flagged is None:
        return None
    names = audit.classes or []
    classes = [
        ClassCounts(**c, name=names[c["label"]] if 0 <= c["label"] < len(names) else None)
        for c in audit.summary.get("classes", [])
    ]
    groups = [
        TriggerGroup(**g, name=names[g["label"]] if 0 <= g["label"] < len(names) else None)
        for g in audit.summary.get("trigger_groups", [])
    ]
    verdict = audit.summary.get("verdict")
    return AuditSummary(
        n_samples=audit.n_samples,
        n_flagged=audit.n_flagged,
        flagged_fraction=round(audit.n_flagged / audit.n_samples, 6),
        verdict=None if verdict is None else verdict_view(verdict, names),
        n_suspected_poisons=audit.summary.get("n_suspected_poisons", 0),
        classes=classes,
        trigger_groups=groups,
        timings=audit.summary.get("timings", {}),
        n_learners=audit.summary.get("n_learners"),
        device=audit.device,
    )


def verdict_view(verdict: dict[str, Any], names: Sequence[str]) -> Verdict:
    """The engine's verdict (its JSON form) with class names."""

    def name(label: int) -> str | None:
        return names[label] if 0 <= label < len(names) else None

    implicated = [
        ImplicatedGroup(
            **group,
            target_name=name(group["target"]),
            source_names=[name(s) for s in group["sources"]],
        )
        for group in verdict["implicated"]
    ]
    return Verdict(**{**verdict, "implicated": implicated})


def _links(audit: Audit) -> AuditLinks:
    base = f"/audits/{audit.id}"
    return AuditLinks(self=base, flagged=f"{base}/flagged", scores=f"{base}/scores")


def _webhook(audit: Audit) -> Webhook | None:
    """Whether and when each attempt delivered; never the peer's answer (worker/delivery.py)."""
    if audit.callback_url is None:
        return None
    deliveries = [
        Delivery(attempt=d.attempt, attempted_at=d.attempted_at, delivered=d.delivered)
        for d in audit.deliveries
    ]
    state = WebhookState(audit.webhook_state or WebhookState.PENDING)
    return Webhook(url=audit.callback_url, state=state, deliveries=deliveries)
