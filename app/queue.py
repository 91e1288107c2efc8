"""The Celery application both sides share. The API only sends tasks by name, so it needs none of
the worker's code (nor torch)."""

from __future__ import annotations

import uuid

from celery import Celery

from app.settings import Settings

RUN_AUDIT = "audit.run"
RUN_PART = "audit.part"
NOTIFY = "audit.notify"
QUEUE = "audits"
# Webhook deliveries have their own queue and workers: a tenant's slow receiver holds a delivery
# worker at most WEBHOOK_TIMEOUT_S per attempt, and never the workers that run audits.
WEBHOOK_QUEUE = "webhooks"


def make_celery(settings: Settings, include: tuple[str, ...] = ()) -> Celery:
    broker = settings.resolved_broker_url
    if broker.startswith("sqla+sqlite:///"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    celery = Celery("dataset_audit", broker=broker, include=list(include))
    celery.conf.update(
        # A task is acknowledged only when it ends, and given back if its worker dies, so a
        # crash re-runs the audit (from its checkpoint) instead of losing it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # results live in the database
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(broker, settings),
        worker_hijack_root_logger=False,
        # Kills a runaway task in pools that can (prefork); under --pool=solo the runner and the
        # reconciler enforce AUDIT_TIME_LIMIT_S instead.
        task_time_limit=int(settings.audit_time_limit_s) + 600,
        # A running audit carries on when the broker connection drops: the database, not the
        # broker, knows it is running (and the reconciler re-sends what the broker lost).
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return celery


def _transport_options(broker: str, settings: Settings) -> dict[str, object]:
    if broker.startswith(("redis", "rediss")):
        # Redis hands an unacknowledged task to another worker after this long: it must outlast
        # the longest audit, or a running audit would be delivered twice.
        return {"visibility_timeout": settings.broker_visibility_timeout_s}
    return {}  # kombu's SQLAlchemy transport passes these to create_engine: none wanted


def send_audit(celery: Celery, audit_id: uuid.UUID) -> None:
    celery.send_task(
        RUN_AUDIT,
        args=[str(audit_id)],
        queue=QUEUE,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
    )


def send_part(celery: Celery, audit_id: uuid.UUID, part: str) -> None:
    celery.send_task(
        RUN_PART,
        args=[str(audit_id), part],
        queue=QUEUE,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
    )


def send_notify(celery: Celery, audit_id: uuid.UUID, *, countdown: float = 0.0) -> None:
    """Deliver the audit's webhook (now, or after ``countdown`` seconds for a retry)."""
    celery.send_task(NOTIFY, args=[str(audit_id)], queue=WEBHOOK_QUEUE, countdown=countdown or None)
