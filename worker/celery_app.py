"""``celery -A worker.celery_app worker``: the worker process's Celery application."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any

from celery.signals import after_setup_task_logger, worker_ready, worker_shutting_down

from app import lifecycle, parts
from app.logs import configure_logging
from app.queue import make_celery
from app.serve import PARENT_PID_ENV
from app.settings import get_settings
from worker.attempt import shutdown_requested
from worker.identity import died_here, worker_context

ORPHAN_CHECK_S = 1.0
log = logging.getLogger(__name__)
celery_app = make_celery(get_settings(), include=("worker.tasks",))


@after_setup_task_logger.connect
def log_as_configured(loglevel: int, **_: Any) -> None:
    """With LOG_FORMAT=json, one JSON handler replaces the text ones Celery has just set up (the
    task logger's last)."""
    configure_logging(get_settings(), loglevel)


@worker_ready.connect
def recover_local_audits(**_: Any) -> None:
    """Queue again, at once, the audits that a worker on this host held when its process died
    (killed, out of memory): the reconciler would otherwise wait for their heartbeats to time
    out. Another host's audits are left to the reconciler."""
    lifecycle.give_back_orphans(worker_context(), died_here)
    parts.give_back_orphans(worker_context(), died_here)


@worker_ready.connect
def mark_stops_first(**_: Any) -> None:
    """Note a stop signal before Celery acts on it. A cold stop (SIGQUIT, a second SIGINT) cancels
    the running task before Celery announces the shutdown, and on the solo pool it does so by
    raising from its handler wherever the engine is: the runner must already know that this is a
    stop, not an engine error, so that it queues the audit again instead of failing it."""
    for stop in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        celery_handler = signal.getsignal(stop)
        if callable(celery_handler):
            signal.signal(stop, partial(_mark_then_handle, celery_handler))


def _mark_then_handle(celery_handler: Callable[[int, FrameType | None], Any], signum: int,
                      frame: FrameType | None) -> None:  # fmt: skip
    shutdown_requested.set()
    celery_handler(signum, frame)


@worker_ready.connect
def follow_serve(**_: Any) -> None:
    """Under ``dataset-audit serve``, stop when it is gone: a ``serve`` killed outright (SIGKILL)
    cannot stop its worker itself, and an orphaned worker would hold the data folder's queue."""
    parent = os.environ.get(PARENT_PID_ENV)
    if parent:
        watch = threading.Thread(
            target=_stop_when_orphaned, args=(int(parent),), name="serve-watch", daemon=True
        )
        watch.start()


def _stop_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_S)
    log.warning("dataset-audit serve (pid %d) is gone; this worker stops", parent)
    os.kill(os.getpid(), signal.SIGQUIT)  # a cold stop, as serve's own: the audit is queued again


@worker_shutting_down.connect
def stop_taking_audits(**_: Any) -> None:
    """A running audit stops at its next progress report and goes back to the queue."""
    shutdown_requested.set()
