"""One attempt at an audit, while the worker holds it: a heartbeat from a thread of its own, the
engine's progress callback, and why the attempt stopped early.

The callback is where the engine can be stopped: it raises ``Stop`` when the worker is shutting
down, the audit was cancelled or taken away, or the attempt ran past its time limit. ``ending``
turns an error that stopped an attempt into how the audit ends, each kind of error with its own
code and words: the dataset's owner, the operator and the machine each have their own fix.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

from sqlalchemy.exc import OperationalError

from app import lifecycle, parts
from app.context import Context
from app.formats import DatasetError
from dataset_audit.schemas import AuditStatus
from incompat import DeviceUnavailableError, InvalidConfigError, InvalidDatasetError

log = logging.getLogger(__name__)

# Set (by worker/celery_app.py) when the worker process begins to shut down.
shutdown_requested = threading.Event()


class Stop(Exception):
    """The attempt stops before its end."""


class Cancelled(Stop):
    """Someone asked to cancel the audit."""


class Interrupted(Stop):
    """The worker is shutting down: the audit goes back to the queue."""


class Lost(Stop):
    """The worker no longer holds the audit: it was taken for lost (a heartbeat went unwritten
    too long) and re-queued or failed, or deleted."""


class TimedOut(Stop):
    """The attempt ran past ``AUDIT_TIME_LIMIT_S``."""


@dataclass
class Attempt:
    """A held audit. ``with attempt:`` writes its heartbeat every ``HEARTBEAT_INTERVAL_S``, so a
    long step without progress reports (loading, a slow epoch) does not look like a dead worker;
    a database outage only skips beats. The attempt is the engine's ``on_progress`` callback.
    With ``part``, it holds that part of an audit run in parts (app/parts.py)."""

    context: Context
    audit_id: uuid.UUID
    worker: str
    part: str | None = None

    def __post_init__(self) -> None:
        settings = self.context.settings
        self.deadline = time.monotonic() + settings.audit_time_limit_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._last_write = 0.0
        self._stage: str | None = None

    def __enter__(self) -> Attempt:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.context.settings.heartbeat_interval_s):
            try:
                held = (
                    lifecycle.heartbeat(self.context, self.audit_id, worker=self.worker)
                    if self.part is None
                    else parts.heartbeat(self.context, self.audit_id, self.part, worker=self.worker)
                )
            except OperationalError as exc:
                log.warning("audit %s: heartbeat not written: %s", self.audit_id, exc.orig)
                continue
            if not held:
                self.lost.set()
                return

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Write progress (and a heartbeat) at most every ``PROGRESS_INTERVAL_S`` or when the
        stage changes; raise ``Stop`` when the attempt must end."""
        if shutdown_requested.is_set():
            raise Interrupted
        if self.lost.is_set():
            raise Lost
        now = time.monotonic()
        if now > self.deadline:
            raise TimedOut
        interval = self.context.settings.progress_interval_s
        if stage == self._stage and now - self._last_write < interval and done < total:
            return
        self._stage, self._last_write = stage, now
        try:
            state = (
                lifecycle.record_progress(
                    self.context, self.audit_id, worker=self.worker, stage=stage, done=done,
                    total=total,
                )
                if self.part is None
                else parts.record_progress(
                    self.context, self.audit_id, self.part, worker=self.worker, done=done,
                    total=total,
                )
            )  # fmt: skip
        except OperationalError as exc:  # the database is down: carry on, report later
            log.warning("audit %s: progress not written: %s", self.audit_id, exc.orig)
            return
        if state == "cancel":
            raise Cancelled
        if state == "lost":
            raise Lost


def ending(exc: BaseException, *, time_limit_s: float) -> lifecycle.Ending:
    """What an error that stopped the attempt makes of the audit (``Lost`` and ``Interrupted``
    are the runner's: the audit is not this worker's to end)."""
    failed, cancelled = AuditStatus.FAILED, AuditStatus.CANCELLED
    if isinstance(exc, Cancelled):
        return lifecycle.Ending(cancelled, "cancelled while running")
    if isinstance(exc, TimedOut):
        reason = f"stopped after the time limit of {time_limit_s:.0f} s (AUDIT_TIME_LIMIT_S)"
        return lifecycle.Ending(failed, reason, "time_limit")
    if isinstance(exc, DatasetError):
        return lifecycle.Ending(failed, f"the dataset cannot be read: {exc}", "dataset_unreadable")
    if isinstance(exc, FileNotFoundError):
        return lifecycle.Ending(failed, "the stored upload is missing", "dataset_unreadable")
    if isinstance(exc, InvalidDatasetError):
        return lifecycle.Ending(failed, f"the dataset cannot be audited: {exc}", "dataset_invalid")
    if isinstance(exc, InvalidConfigError):
        log.error("the engine refused the service's configuration: %s", exc)
        reason = f"the service is misconfigured ({exc}); an operator must fix it"
        return lifecycle.Ending(failed, reason, "configuration_invalid")
    if isinstance(exc, DeviceUnavailableError):
        log.error("this worker's device is unavailable: %s", exc)
        reason = f"the worker's device is unavailable ({exc}); an operator must fix the worker"
        return lifecycle.Ending(failed, reason, "device_unavailable")
    log.error("audit failed with an internal error", exc_info=exc)
    return lifecycle.Ending(failed, f"internal error: {exc!r}", "internal")
