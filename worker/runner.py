"""Run one audit: claim it, load the stored dataset, call the engine, save the outcome.

Celery-free, so tests can run it directly. Every status change is ``app.lifecycle``'s; the
attempt (``worker/attempt.py``) keeps the audit held while the engine runs. The engine
checkpoints after every weak learner, so a redelivered audit (its worker died or stopped) resumes
from there.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from app import lifecycle
from app.context import Context
from app.formats import LoadedDataset, load_dataset
from app.outcome import Outcome
from app.tables import Audit
from dataset_audit.schemas import AuditStatus
from incompat import DetectionResult, detect
from incompat.checkpoint import learners_in as checkpoint_learners
from worker.attempt import Attempt, Interrupted, Lost, ending, shutdown_requested
from worker.identity import worker_name
from worker.report_assets import report_assets

log = logging.getLogger(__name__)


def run_audit(context: Context, audit_id: uuid.UUID) -> AuditStatus | None:
    """The audit's final status (QUEUED when this worker gave it back), or None when there was
    nothing to do (finished, cancelled, unknown, or held by another live worker) or the audit
    was taken from this worker."""
    worker = worker_name()
    audit = lifecycle.claim(context, audit_id, worker=worker)
    if audit is None:
        log.info("audit %s: nothing to do", audit_id)
        return None
    log.info("audit %s: started (attempt %d)", audit_id, audit.attempts)
    checkpoint = _checkpoint_path(context, audit_id)
    with Attempt(context, audit_id, worker) as attempt:
        try:
            dataset = _load(context, audit)
            result = _detect(context, audit, dataset, attempt, checkpoint)
            outcome = _outcome(context, audit_id, dataset, result)
        except Exception as exc:
            return _stopped(context, audit_id, worker, exc, checkpoint)
    if not lifecycle.succeed(context, audit_id, worker=worker, outcome=outcome):
        log.warning("audit %s: no longer held by this worker; result dropped", audit_id)
        return None
    checkpoint.unlink(missing_ok=True)
    log.info("audit %s: %d of %d flagged", audit_id, outcome.is_flagged.sum(), result.n_samples)
    return AuditStatus.SUCCEEDED


def _load(context: Context, audit: Audit) -> LoadedDataset:
    with context.storage.local_copy(audit.storage_key) as path:
        return load_dataset(path, limits=context.settings.dataset_limits)


def _detect(
    context: Context, audit: Audit, dataset: LoadedDataset, attempt: Attempt, checkpoint: Path
) -> DetectionResult:
    _announce_resume(audit.id, checkpoint)
    device = context.settings.worker_device
    return detect(
        dataset.images,
        dataset.labels,
        config=audit.preset,
        seed=audit.seed,
        device=None if device == "auto" else device,
        on_progress=attempt,
        checkpoint_to=checkpoint,
        resume_from=checkpoint,
    )


def _stopped(
    context: Context, audit_id: uuid.UUID, worker: str, exc: Exception, checkpoint: Path
) -> AuditStatus | None:
    if isinstance(exc, Interrupted) or shutdown_requested.is_set():
        lifecycle.give_back(context, audit_id, worker=worker)  # the checkpoint stays
        log.info("audit %s: the worker is stopping; queued again to resume later", audit_id)
        return AuditStatus.QUEUED
    if isinstance(exc, Lost):
        log.warning("audit %s: no longer held by this worker; stopped", audit_id)
        return None
    checkpoint.unlink(missing_ok=True)
    end = ending(exc, time_limit_s=context.settings.audit_time_limit_s)
    return end.status if lifecycle.end(context, audit_id, worker=worker, ending=end) else None


def _outcome(
    context: Context, audit_id: uuid.UUID, dataset: LoadedDataset, result: DetectionResult
) -> Outcome:
    order = result.most_suspicious()
    summary = result.summary()
    try:
        summary.update(
            report_assets(
                context.storage,
                str(audit_id),
                dataset.images,
                dataset.labels,
                result.score,
                result.is_flagged,
                result.voted_label,
                order,
            )
        )
    except Exception:  # the audit's result stands without its pictures
        log.exception("audit %s: could not make the report's thumbnails", audit_id)
    return Outcome(
        scores=result.score,
        is_flagged=result.is_flagged,
        labels=dataset.labels,
        voted_label=result.voted_label,
        label_prob=result.label_prob,
        suspicion_order=order,
        is_suspected_poison=result.is_suspected_poison,
        paths=dataset.paths,
        summary=summary,
        engine_version=result.engine_version,
        device=result.device,
    )


def _announce_resume(audit_id: uuid.UUID, checkpoint: Path) -> None:
    if not checkpoint.exists():
        return
    try:
        learners = checkpoint_learners(checkpoint)
    except ValueError as exc:  # unreadable: start over rather than fail the audit
        log.warning("audit %s: discarding the checkpoint: %s", audit_id, exc)
        checkpoint.unlink(missing_ok=True)
        return
    log.info("audit %s: resuming from a checkpoint of %d weak learners", audit_id, learners)


def _checkpoint_path(context: Context, audit_id: uuid.UUID) -> Path:
    # Beside the upload when storage is local, so any worker on this machine resumes it.
    folder = context.storage.local_dir(f"audits/{audit_id}")
    if folder is None:
        folder = context.settings.data_dir / "checkpoints" / str(audit_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "checkpoint.npz"
