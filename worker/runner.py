"""Run one audit, or one part of it: claim it, load the stored dataset, call the engine, save the
outcome.

An audit runs as one task, or (``AUDIT_PARALLEL_BAGS``) as parts (``run_part``: one bag's
clustering, the probe), each on any worker, then a merge (``run_audit`` again) that reads their
results from storage. Celery-free, so tests can run it directly. Every status change is
``app.lifecycle``'s and ``app.parts``'; the attempt (``worker/attempt.py``) keeps the audit or
part held while the engine runs. The engine checkpoints after every weak learner, in storage
where any worker finds it, so a redelivered audit or part (its worker died or stopped) resumes
from there.
"""

from __future__ import annotations

import logging
import uuid

from app import lifecycle, parts
from app.context import Context
from app.formats import LoadedDataset, load_dataset
from app.outcome import Outcome
from app.tables import Audit
from dataset_audit.schemas import AuditStatus
from incompat import DetectionResult, checkpoint, detect
from incompat.engine import Run
from worker.attempt import Attempt, Interrupted, Lost, ending, shutdown_requested
from worker.identity import worker_name
from worker.report_assets import report_assets
from worker.stored import StoredCheckpoint, part_key

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
    store = StoredCheckpoint(context.storage, f"audits/{audit_id}/checkpoint.npz")
    with Attempt(context, audit_id, worker) as attempt:
        try:
            dataset = _load(context, audit)
            result = _detect(context, audit, dataset, attempt, store)
            outcome = _outcome(context, audit_id, dataset, result)
        except Exception as exc:
            return _stopped(context, audit_id, worker, exc, store)
    if not lifecycle.succeed(context, audit_id, worker=worker, outcome=outcome):
        log.warning("audit %s: no longer held by this worker; result dropped", audit_id)
        return None
    store.delete()
    context.storage.delete_prefix(f"audits/{audit_id}/parts")
    log.info("audit %s: %d of %d flagged", audit_id, outcome.is_flagged.sum(), result.n_samples)
    return AuditStatus.SUCCEEDED


def _load(context: Context, audit: Audit) -> LoadedDataset:
    with context.storage.local_copy(audit.storage_key) as path:
        return load_dataset(
            path, limits=context.settings.dataset_limits, image_size=audit.image_size
        )


def run_part(context: Context, audit_id: uuid.UUID, part: str) -> bool | None:
    """Run one part of an audit run in parts and store its result; True when done, False when
    this worker gave it back, None when there was nothing to do or the part was taken away."""
    worker = worker_name()
    audit = parts.claim(context, audit_id, part, worker=worker)
    if audit is None:
        log.info("audit %s: %s: nothing to do", audit_id, part)
        return None
    log.info("audit %s: %s started", audit_id, part)
    store = StoredCheckpoint(context.storage, part_key(audit_id, part))
    with Attempt(context, audit_id, worker, part=part) as attempt:
        try:
            dataset = _load(context, audit)
            run = _run(context, audit, dataset)
            if part == "probe":
                store.write(checkpoint.probe_to_bytes(run.probe(attempt), run.run_id))
            else:
                _announce_resume(audit_id, store)
                run.cluster_bag(_bag(part), on_progress=attempt, store=store)
        except Exception as exc:
            if isinstance(exc, Interrupted) or shutdown_requested.is_set():
                parts.give_back(context, audit_id, part, worker=worker)
                log.info("audit %s: %s queued again: the worker is stopping", audit_id, part)
                return False
            if not isinstance(exc, Lost):
                limit = context.settings.audit_time_limit_s
                parts.end(context, audit_id, ending(exc, time_limit_s=limit))
            return None
    if not parts.finish(context, audit_id, part, worker=worker):
        log.warning("audit %s: %s no longer held by this worker; result dropped", audit_id, part)
        return None
    log.info("audit %s: %s done", audit_id, part)
    return True


def _detect(
    context: Context,
    audit: Audit,
    dataset: LoadedDataset,
    attempt: Attempt,
    store: StoredCheckpoint,
) -> DetectionResult:
    merged = parts.names(context, audit.id)
    if merged:
        return _merge(context, audit, dataset, attempt, merged)
    _announce_resume(audit.id, store)
    return detect(
        dataset.images,
        dataset.labels,
        config=audit.preset,
        seed=audit.seed,
        device=_device(context),
        on_progress=attempt,
        checkpoint_to=store,
        resume_from=store,
    )


def _merge(
    context: Context, audit: Audit, dataset: LoadedDataset, attempt: Attempt, names: list[str]
) -> DetectionResult:
    """The result of an audit whose parts (``names``) are done, from their stored results."""
    run = _run(context, audit, dataset)
    bags: list[checkpoint.ClusteringState] = []
    probe = None
    for name in names:
        data = context.storage.get_bytes(part_key(audit.id, name))
        if data is None:
            raise FileNotFoundError(f"the result of {name} is missing from storage")
        if name == "probe":
            probe = checkpoint.probe_from_bytes(data, run.run_id)
        else:
            bags.append(checkpoint.from_bytes(data, run.run_id, f"the result of {name}"))
    return run.finish(checkpoint.combine(bags), probe, on_progress=attempt)


def _run(context: Context, audit: Audit, dataset: LoadedDataset) -> Run:
    return Run(
        dataset.images, dataset.labels, config=audit.preset, seed=audit.seed,
        device=_device(context),
    )  # fmt: skip


def _device(context: Context) -> str | None:
    device = context.settings.worker_device
    return None if device == "auto" else device


def _bag(part: str) -> int:
    return int(part.removeprefix("bag-"))


def _stopped(
    context: Context, audit_id: uuid.UUID, worker: str, exc: Exception, store: StoredCheckpoint
) -> AuditStatus | None:
    if isinstance(exc, Interrupted) or shutdown_requested.is_set():
        lifecycle.give_back(context, audit_id, worker=worker)  # the checkpoint stays
        log.info("audit %s: the worker is stopping; queued again to resume later", audit_id)
        return AuditStatus.QUEUED
    if isinstance(exc, Lost):
        log.warning("audit %s: no longer held by this worker; stopped", audit_id)
        return None
    store.delete()
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


def _announce_resume(audit_id: uuid.UUID, store: StoredCheckpoint) -> None:
    data = store.read()
    if data is None:
        return
    try:
        learners = checkpoint.learners_in(data)
    except ValueError as exc:  # unreadable: start over rather than fail the audit
        log.warning("audit %s: discarding the checkpoint: %s", audit_id, exc)
        store.delete()
        return
    log.info("audit %s: resuming from a checkpoint of %d weak learners", audit_id, learners)
