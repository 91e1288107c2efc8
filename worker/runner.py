"""Run one audit: claim it, load the stored dataset, call the engine, save the outcome.

Celery-free, so tests can run it directly. The engine checkpoints after every weak learner; a
redelivered audit (its worker died) resumes from there. While it runs, a heartbeat thread tells
the reconciler (app/reconciler.py) that the worker is alive.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from sqlalchemy.exc import OperationalError

from app.context import Context
from app.db import transaction
from app.dispatch import dispatch
from app.formats import DatasetError, load_dataset
from app.queue import send_notify
from app.services import audits as service
from dataset_audit.schemas import AuditStatus
from incompat import DetectionResult, detect
from incompat.checkpoint import learners_in as checkpoint_learners
from worker.identity import worker_name
from worker.report_assets import report_assets

log = logging.getLogger(__name__)


# Set (by worker/celery_app.py) when the worker process begins to shut down.
shutdown_requested = threading.Event()


class AuditCancelled(Exception):
    """Someone asked to cancel the audit."""


class AuditInterrupted(Exception):
    """The worker is shutting down: the audit goes back to the queue."""


class AuditLost(Exception):
    """The worker no longer holds the audit: it was taken for lost (a heartbeat went unwritten
    too long) and re-queued or failed, or deleted."""


class AuditTimedOut(Exception):
    """The attempt ran past ``AUDIT_TIME_LIMIT_S``."""


class Heartbeat:
    """Writes the audit's heartbeat from a thread of its own every ``HEARTBEAT_INTERVAL_S``, so a
    long step without progress reports (loading, a slow epoch) does not look like a dead worker.
    Sets ``lost`` when the worker no longer holds the audit. A database outage only skips beats."""

    def __init__(self, context: Context, audit_id: uuid.UUID, worker: str) -> None:
        self.context = context
        self.audit_id = audit_id
        self.worker = worker
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.context.settings.heartbeat_interval_s):
            try:
                with transaction(self.context.sessions) as session:
                    held = service.heartbeat(session, self.audit_id, worker=self.worker)
            except OperationalError as exc:
                log.warning("audit %s: heartbeat not written: %s", self.audit_id, exc.orig)
                continue
            if not held:
                self.lost.set()
                return


class ProgressReporter:
    """The engine's progress callback: writes progress (and a heartbeat) to the audit's row at
    most every ``interval`` seconds or when the stage changes, and stops the engine, by raising,
    when the worker is stopping, the audit was cancelled or lost, or the attempt ran too long."""

    def __init__(self, context: Context, audit_id: uuid.UUID, worker: str, heartbeat: Heartbeat):
        self.context = context
        self.audit_id = audit_id
        self.worker = worker
        self.heartbeat = heartbeat
        self.interval = context.settings.progress_interval_s
        self.deadline = time.monotonic() + context.settings.audit_time_limit_s
        self._last_write = 0.0
        self._stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if shutdown_requested.is_set():
            raise AuditInterrupted
        if self.heartbeat.lost.is_set():
            raise AuditLost
        now = time.monotonic()
        if now > self.deadline:
            raise AuditTimedOut
        if stage == self._stage and now - self._last_write < self.interval and done < total:
            return
        self._stage, self._last_write = stage, now
        try:
            with transaction(self.context.sessions) as session:
                state = service.record_progress(
                    session, self.audit_id, worker=self.worker, stage=stage, done=done, total=total
                )
        except OperationalError as exc:  # the database is down: carry on, report later
            log.warning("audit %s: progress not written: %s", self.audit_id, exc.orig)
            return
        if state == "cancel":
            raise AuditCancelled
        if state == "lost":
            raise AuditLost


def run_audit(context: Context, audit_id: uuid.UUID) -> AuditStatus | None:
    """The audit's final status, or None when there was nothing to do (finished, cancelled,
    unknown, or held by another live worker) or the audit was taken from this worker."""
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
    with Heartbeat(context, audit_id, worker) as heartbeat:
        return _run_held(context, audit_id, worker, heartbeat, key, preset, seed)


def _run_held(
    context: Context,
    audit_id: uuid.UUID,
    worker: str,
    heartbeat: Heartbeat,
    key: str,
    preset: str,
    seed: int,
) -> AuditStatus | None:
    try:
        with context.storage.local_copy(key) as path:
            dataset = load_dataset(path, limits=context.settings.dataset_limits)
    except DatasetError as exc:
        return _end(
            context, audit_id, worker, AuditStatus.FAILED, f"the dataset cannot be read: {exc}"
        )
    except FileNotFoundError:
        return _end(context, audit_id, worker, AuditStatus.FAILED, "the stored upload is missing")
    except Exception as exc:
        log.exception("audit %s: loading failed", audit_id)
        return _end(context, audit_id, worker, AuditStatus.FAILED, f"internal error: {exc!r}")

    checkpoint = _checkpoint_path(context, audit_id)
    _announce_resume(audit_id, checkpoint)
    device = None if context.settings.worker_device == "auto" else context.settings.worker_device
    try:
        result = detect(
            dataset.images,
            dataset.labels,
            config=preset,
            seed=seed,
            device=device,
            on_progress=ProgressReporter(context, audit_id, worker, heartbeat),
            checkpoint_to=checkpoint,
            resume_from=checkpoint,
        )
    except AuditCancelled:
        checkpoint.unlink(missing_ok=True)
        return _end(context, audit_id, worker, AuditStatus.CANCELLED, "cancelled while running")
    except AuditLost:
        log.warning("audit %s: no longer held by this worker; stopped", audit_id)
        return None
    except AuditTimedOut:
        checkpoint.unlink(missing_ok=True)
        limit = context.settings.audit_time_limit_s
        reason = f"stopped after the time limit of {limit:.0f} s (AUDIT_TIME_LIMIT_S)"
        return _end(context, audit_id, worker, AuditStatus.FAILED, reason)
    except Exception as exc:
        # A worker that is stopping interrupts the engine at its next progress report, or (a cold
        # stop) with an error raised from its signal handler wherever the engine was.
        if shutdown_requested.is_set():
            return _give_back(context, audit_id, worker)
        checkpoint.unlink(missing_ok=True)
        if isinstance(exc, ValueError):  # the engine's validation: a dataset it cannot audit
            reason = f"the dataset cannot be audited: {exc}"
            return _end(context, audit_id, worker, AuditStatus.FAILED, reason)
        log.exception("audit %s: engine error", audit_id)
        return _end(context, audit_id, worker, AuditStatus.FAILED, f"internal error: {exc!r}")

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
        stored = service.hold(session, audit_id, worker=worker)
        if stored is None:  # cancelled, lost or deleted meanwhile
            log.warning("audit %s: no longer held by this worker; result dropped", audit_id)
            return None
        service.save_outcome(session, stored, outcome)
        callback = stored.callback_url
    checkpoint.unlink(missing_ok=True)
    log.info("audit %s: %d of %d flagged", audit_id, outcome.is_flagged.sum(), result.n_samples)
    _announce(context, audit_id, callback)
    return AuditStatus.SUCCEEDED


def _end(
    context: Context, audit_id: uuid.UUID, worker: str, status: AuditStatus, error: str
) -> AuditStatus | None:
    log.info("audit %s: %s: %s", audit_id, status, error)
    with transaction(context.sessions) as session:
        audit = service.hold(session, audit_id, worker=worker)
        if audit is None:
            return None
        service.finish(session, audit, status, error)
        callback = audit.callback_url
    _announce(context, audit_id, callback)
    return status


def _give_back(context: Context, audit_id: uuid.UUID, worker: str) -> AuditStatus:
    """Queue the audit again, keeping its checkpoint, so that a worker resumes it."""
    with transaction(context.sessions) as session:
        service.release(session, audit_id, worker=worker)
    log.info("audit %s: the worker is stopping; queued again to resume later", audit_id)
    dispatch(context, [audit_id])
    return AuditStatus.QUEUED


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
        is_suspected_poison=result.is_suspected_poison,
        paths=paths,
        summary=result.summary(),
        engine_version=result.engine_version,
        device=result.device,
    )
