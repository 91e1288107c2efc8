"""The reconciler: makes the queue agree with the database, which is the source of truth.

Every ``RECONCILE_INTERVAL_S`` (each API process runs one; every step is a conditional update, so
several at once do no harm) it

- re-queues a running audit whose worker stopped writing heartbeats (killed, out of memory, its
  machine gone) for ``HEARTBEAT_TIMEOUT_S``; the next worker resumes it from its checkpoint. After
  ``MAX_ATTEMPTS`` starts it fails the audit instead, with the reason;
- does the same for the parts of an audit run in parts (app/parts.py), part by part, and sends
  the merge of one whose parts are all done but which no one merged;
- fails a running audit past its time limit whose worker, though alive, does not stop it;
- sends again the queued audits whose task the broker never took (it was down) or forgot (it
  restarted empty). A broker forgets everything at once, so the reconciler keeps a sentinel
  message in a queue of its own that no one consumes: when the sentinel is gone, so is every
  task that was queued with it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field

from celery import Celery
from kombu.entity import Exchange, Queue

from app import lifecycle, parts
from app.context import Context
from app.tables import utcnow

log = logging.getLogger(__name__)

SENTINEL = Queue(
    "audits.sentinel",
    Exchange("audits.sentinel", type="direct"),
    routing_key="audits.sentinel",
    durable=True,
)
# An audit is dispatched right after its row is written: leave the API that long to do it.
DISPATCH_GRACE_S = 10.0
# A worker past its time limit stops at its next progress report: give it that long.
TIME_LIMIT_GRACE_S = 300.0


@dataclass
class Reconciled:
    requeued: list[uuid.UUID] = field(default_factory=list)
    requeued_parts: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    broker_forgot: bool = False
    sent: int = 0


def reconcile(context: Context) -> Reconciled:
    """One pass; safe to run from any number of processes at once."""
    done = Reconciled()
    done.requeued, done.failed = lifecycle.recover_silent(context)
    done.requeued_parts, failed_in_parts = parts.recover_silent(context)
    done.failed += failed_in_parts
    done.failed += lifecycle.fail_overdue(context, grace_s=TIME_LIMIT_GRACE_S)
    done.broker_forgot = broker_forgot(context.celery)
    waiting = lifecycle.undispatched(
        context, settled_s=DISPATCH_GRACE_S, everything=done.broker_forgot
    )
    to_send = [*done.requeued, *(a for a in waiting if a not in done.requeued)]
    done.sent = lifecycle.dispatch(context, to_send)
    done.sent += parts.send(context, parts.undispatched(context, everything=done.broker_forgot))
    if done.requeued or done.requeued_parts or done.failed or done.sent:
        log.info(
            "reconciled: %d re-queued, %d parts re-queued, %d failed, %d sent%s",
            len(done.requeued), len(done.requeued_parts), len(done.failed), done.sent,
            " (the broker had lost its tasks)" if done.broker_forgot else "",
        )  # fmt: skip
    return done


def broker_forgot(celery: Celery) -> bool:
    """True when the broker no longer holds the sentinel (it restarted empty, or this is the
    first look); plants a new one."""
    with celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)  # fail fast: the next pass tries again
        channel = connection.default_channel
        SENTINEL(channel).declare()
        _, size, _ = channel.queue_declare(queue=SENTINEL.name)
        if size:
            return False
        connection.Producer(channel).publish(
            {"planted_at": utcnow().isoformat()},
            exchange=SENTINEL.exchange,
            routing_key=SENTINEL.routing_key,
            serializer="json",
            retry=True,
        )
    return True


class Reconciler:
    """``reconcile`` every ``RECONCILE_INTERVAL_S`` in a daemon thread, until ``stop``."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)

    def start(self) -> None:
        if self.context.settings.reconcile_interval_s > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                reconcile(self.context)
            except Exception as exc:  # the database or broker is down: try again next time
                log.warning("reconciler: %s: %s", type(exc).__name__, exc)
            if self._stop.wait(self.context.settings.reconcile_interval_s):
                return
