"""The worker container's healthcheck: exit 0 when its Celery worker is alive, 1 when not.

``celery inspect ping`` alone is not enough: the worker runs with ``--pool=solo``, which executes
an audit in the very thread that answers control messages, so a worker busy with an audit (minutes
to hours) does not answer pings. Alive therefore means: it answers a ping, or it holds a running
audit (``audits.worker`` is ``HOSTNAME:PID:INCARNATION``) whose heartbeat is younger than
``HEARTBEAT_TIMEOUT_S``, the same rule by which another worker may take the audit over.
"""

from __future__ import annotations

import socket
import sys
from datetime import timedelta

from sqlalchemy import Engine, func, select

from app.tables import Audit, utcnow
from dataset_audit.schemas import AuditStatus

PING_TIMEOUT_S = 5.0


def celery_node(hostname: str) -> str:
    """The worker's node name: Celery's default ``celery@%h``."""
    return f"celery@{hostname}"


def answers_ping(hostname: str, timeout_s: float = PING_TIMEOUT_S) -> bool:
    from worker.celery_app import celery_app

    replies = celery_app.control.ping(destination=[celery_node(hostname)], timeout=timeout_s)
    return bool(replies)


def running_audits_with_heartbeat(engine: Engine, hostname: str, heartbeat_timeout_s: float) -> int:
    """How many running audits this host's worker holds with a fresh heartbeat."""
    fresh = utcnow() - timedelta(seconds=heartbeat_timeout_s)
    query = select(func.count()).where(
        Audit.status == AuditStatus.RUNNING,
        Audit.worker.startswith(f"{hostname}:", autoescape=True),
        Audit.heartbeat_at >= fresh,
    )
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def main() -> int:
    from app.db import make_engine
    from app.settings import get_settings

    hostname = socket.gethostname()
    if answers_ping(hostname):
        return 0
    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    try:
        busy = running_audits_with_heartbeat(engine, hostname, settings.heartbeat_timeout_s)
    finally:
        engine.dispose()
    if busy:
        return 0
    print(
        f"{celery_node(hostname)} answers no ping and holds no running audit with a heartbeat "
        f"younger than {settings.heartbeat_timeout_s:.0f}s",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
