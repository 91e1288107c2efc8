"""Run one audit: claim it, load the stored dataset, call the engine, save the outcome.

Celery-free, so tests can run it directly. The engine checkpoints after every weak learner; a
redelivered audit (its worker died) resumes from there.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from app.context import Context
from app.db import transaction
from app.formats import DatasetError, load_dataset
from app.models import Audit, AuditStatus
from app.queue import send_audit, send_notify
from app.services import audits as service
from incompat import DetectionResult, detect
from worker.context import worker_name
from worker.report_assets import report_assets

log = logging.getLogger(__name__)


# Set (by worker/celery_app.py) when the worker process begins to shut down.
shutdown_requested = threading.Event()


class AuditCancelled(Exception):
    """Someone asked to cancel the audit."""


class AuditInterrupted(Exception):
    """The worker is shutting down: the audit goes back to the queue."""


class ProgressReporter:
    """The engine's progress callback: writes progress (and a heartbeat) to the audit's row at
    most every ``interval`` seconds or when the stage changes, and stops the engine, by raising,
    once a cancel was asked for."""

    def __init__(self, context: Context, audit_id: uuid.UUID, worker: str) -> None:
        self.context = context
        self.audit_id = audit_id
        self.worker = worker
        self.interval = context.settings.progress_interval_s
        self._last_write = 0.0
        self._stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if shutdown_requested.is_set():
            raise AuditInterrupted
        now = time.monotonic()
        if stage == self._stage and now - self._last_write < self.interval and done < total:
            return
        self._stage, self._last_write = stage, now
        with transaction(self.context.sessions) as session:
            cancel = service.record_progress(
                session, self.audit_id, worker=self.worker, stage=stage, done=done, total=total
            )
        if cancel:
            raise AuditCancelled


def run_audit(context: Context, audit_id: uuid.UUID) -> AuditStatus | None:
    """The audit's final status, or None when there was nothing to do (finished, cancelled,
    unknown, or held by another live worker)."""
    worker = worker_name()
    with transaction(context.sessions) as session:
        audit = service.claim(
            session,
            audit_id,
            worker=worker,
            heartbeat_timeout_s=context.settings.heartbeat_timeout_s,
        )
        if audit is None:
            log.info("audit %s: nothing to do", audit_id)
            return None
        key, preset, seed = audit.storage_key, audit.preset, audit.seed
    log.info("audit %s: started (attempt %d)", audit_id, audit.attempts)

    try:
        with context.storage.local_copy(key) as path:
            dataset = load_dataset(path, limits=context.settings.dataset_limits)
    except DatasetError as exc:
        return _end(context, audit_id, AuditStatus.FAILED, f"the dataset cannot be read: {exc}")
    except FileNotFoundError:
        return _end(context, audit_id, AuditStatus.FAILED, "the stored upload is missing")
    except Exception as exc:
        log.exception("audit %s: loading failed", audit_id)
        return _end(context, audit_id, AuditStatus.FAILED, f"internal error: {exc!r}")

    checkpoint = _checkpoint_path(context, audit_id)
    device = None if context.settings.worker_device == "auto" else context.settings.worker_device
    try:
        result = detect(
            dataset.images,
            dataset.labels,
            config=preset,
            seed=seed,
            device=device,
            on_progress=ProgressReporter(context, audit_id, worker),
            checkpoint_to=checkpoint,
            resume_from=checkpoint,
        )
    except AuditCancelled:
        checkpoint.unlink(missing_ok=True)
        return _end(context, audit_id, AuditStatus.CANCELLED, "cancelled while running")
    except Exception as exc:
        # A worker that is stopping interrupts the engine at its next progress report, or (a cold
        # stop) with an error raised from its signal handler wherever the engine was.
        if shutdown_requested.is_set():
            return _give_back(context, audit_id, worker)
        checkpoint.unlink(missing_ok=True)
        if isinstance(exc, ValueError):  # the engine's validation: a dataset it cannot audit
            reason = f"the dataset cannot be audited: {exc}"
            return _end(context, audit_id, AuditStatus.FAILED, reason)
        log.exception("audit %s: engine error", audit_id)
        return _end(context, audit_id, AuditStatus.FAILED, f"internal error: {exc!r}")

    outcome = _outcome(result, dataset.labels, dataset.paths)
    try:
        outcome.summary.update(
            report_assets(
                context.storage,
                str(audit_id),
                dataset.images,
                dataset.labels,
                result.score,
                result.is_flagged,
                result.voted_label,
                outcome.suspicion_order,
            )
        )
    except Exception:  # the audit's result stands without its pictures
        log.exception("audit %s: could not make the report's thumbnails", audit_id)
    with transaction(context.sessions) as session:
        stored = session.get(Audit, audit_id)
        if stored is None:  # deleted meanwhile
            return None
        service.save_outcome(session, stored, outcome)
        callback = stored.callback_url
    checkpoint.unlink(missing_ok=True)
    log.info("audit %s: %d of %d flagged", audit_id, outcome.is_flagged.sum(), result.n_samples)
    _announce(context, audit_id, callback)
    return AuditStatus.SUCCEEDED


def _end(context: Context, audit_id: uuid.UUID, status: AuditStatus, error: str) -> AuditStatus:
    log.info("audit %s: %s: %s", audit_id, status, error)
    with transaction(context.sessions) as session:
        audit = session.get(Audit, audit_id)
        if audit is None:
            return status
        service.finish(session, audit, status, error)
        callback = audit.callback_url
    _announce(context, audit_id, callback)
    return status


def _give_back(context: Context, audit_id: uuid.UUID, worker: str) -> AuditStatus:
    """Queue the audit again, keeping its checkpoint, so that a worker resumes it."""
    with transaction(context.sessions) as session:
        service.release(session, audit_id, worker=worker)
    log.info("audit %s: the worker is stopping; queued again to resume later", audit_id)
    try:
        send_audit(context.celery, audit_id)
    except Exception:  # it stays queued: a worker re-sends queued audits when it starts
        log.exception("audit %s: could not queue it again", audit_id)
    return AuditStatus.QUEUED


def _announce(context: Context, audit_id: uuid.UUID, callback_url: str | None) -> None:
    if callback_url is None:
        return
    try:
        send_notify(context.celery, audit_id)
    except Exception:  # the audit's result stands; only its webhook is lost
        log.exception("audit %s: could not queue its webhook", audit_id)


def _checkpoint_path(context: Context, audit_id: uuid.UUID) -> Path:
    # Beside the upload when storage is local, so any worker on this machine resumes it.
    folder = context.storage.local_dir(f"audits/{audit_id}")
    if folder is None:
        folder = context.settings.data_dir / "checkpoints" / str(audit_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "checkpoint.npz"


def _outcome(
    result: DetectionResult, labels: np.ndarray, paths: list[str] | None
) -> service.Outcome:
    return service.Outcome(
        scores=result.score,
        is_flagged=result.is_flagged,
        labels=labels,
        voted_label=result.voted_label,
        label_prob=result.label_prob,
        suspicion_order=result.most_suspicious(),
        paths=paths,
        summary=result.summary(),
        engine_version=result.engine_version,
        device=result.device,
    )
