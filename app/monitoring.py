"""Prometheus metrics at ``/metrics``.

The API and the workers are separate processes, often on separate hosts, and the database is the
one place that knows every audit, so the audit metrics are read from it at scrape time: any API
process answers for the whole service, and a restart loses nothing. Only what this process alone
sees (the uploads it received) is counted in memory.

Cost, measured at a million audits (a 1.1 GB table, PostgreSQL on 2 busy cores): what each
scrape reads takes 0.1 s (an index-only count over the status index, then the few queued and
running audits). Stored bytes and the duration histogram need a pass over every row (0.7 s), so
they are read at most every ``TOTALS_REFRESH_S`` per process; the histogram takes the audits
that finished in the last ``DURATION_WINDOW`` from that same pass (no index orders finished
audits, so a separate query for them would cost another pass). It is a gauge histogram, a
snapshot, not running totals: audits are deleted, so counts over all of them would fall too, and
``rate()`` would read every fall as a reset.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio
from fastapi import APIRouter, Request, Response
from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, Float, extract, func, select, type_coerce
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app.api.deps import get_context
from app.context import Context
from app.tables import Audit, utcnow
from app.uploads import UPLOAD_BYTES, UPLOADS
from dataset_audit.schemas import AuditStatus

log = logging.getLogger(__name__)
router = APIRouter()

TOTALS_REFRESH_S = 300.0
DURATION_WINDOW = timedelta(hours=24)
# From a tiny preset's seconds to the 24-hour time limit.
DURATION_BUCKETS_S = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
FINISHED = [status for status in AuditStatus if status.finished]


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Open like ``/healthz``: counts, no tenant's data."""
    context = get_context(request)
    registry: CollectorRegistry = request.app.state.metrics
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    body = await anyio.to_thread.run_sync(encode, registry, limiter=context.db_threads)
    return Response(body, headers={"Content-Type": content_type})


def metrics_registry(context: Context) -> CollectorRegistry:
    """A registry of the app's own, so that several apps in one process (tests) do not clash.
    The process's collectors and upload counters are process-wide, as what they count is."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, UPLOADS, UPLOAD_BYTES):
        registry.register(collector)
    registry.register(DatabaseCollector(context))
    return registry


@dataclass
class Live:
    """Read at every scrape."""

    audits: dict[AuditStatus, int] = field(default_factory=dict)
    undispatched: int = 0
    heartbeats: dict[str, datetime] = field(default_factory=dict)  # worker -> its latest


@dataclass
class Durations:
    """Of the audits of one status that finished within DURATION_WINDOW."""

    count: int = 0
    sum_s: float = 0.0
    cumulative: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS_S))


@dataclass
class Totals:
    """Read at most every TOTALS_REFRESH_S."""

    stored_bytes: int = 0
    durations: dict[AuditStatus, Durations] = field(default_factory=dict)


class DatabaseCollector(Collector):
    def __init__(self, context: Context) -> None:
        self.context = context
        self._totals: Totals | None = None
        self._totals_read_at = 0.0
        self._totals_lock = threading.Lock()  # concurrent scrapes share one pass

    def describe(self) -> Iterable[Metric]:
        # The names, without a query: registering must not need the database.
        return [_database_up(1), *_families(Live(), Totals(), datetime.now(UTC), 0.0)]

    def collect(self) -> Iterable[Metric]:
        try:
            with self.context.reads() as session:
                live = read_live(session)
                totals = self._recent_totals(session)
        except (OperationalError, InterfaceError) as exc:
            # The scrape still answers: the process's own metrics, and that the database did not.
            log.warning("metrics: the database is unavailable (%s)", type(exc).__name__)
            return [_database_up(0)]
        timeout_s = self.context.settings.heartbeat_timeout_s
        return [_database_up(1), *_families(live, totals, datetime.now(UTC), timeout_s)]

    def _recent_totals(self, session: Session) -> Totals:
        with self._totals_lock:
            stale = time.monotonic() - self._totals_read_at >= TOTALS_REFRESH_S
            if self._totals is None or stale:
                self._totals = read_totals(session)
                self._totals_read_at = time.monotonic()
            return self._totals


def read_live(session: Session) -> Live:
    by_status = session.execute(select(Audit.status, func.count()).group_by(Audit.status))
    undispatched = session.scalar(
        select(func.count()).where(
            Audit.status == AuditStatus.QUEUED, Audit.dispatched_at.is_(None)
        )
    )
    beats = session.execute(
        select(Audit.worker, func.max(Audit.heartbeat_at))
        .where(Audit.status == AuditStatus.RUNNING, Audit.worker.is_not(None))
        .group_by(Audit.worker)
    )
    return Live(
        audits={AuditStatus(status): count for status, count in by_status},
        undispatched=undispatched or 0,
        heartbeats={worker: _utc(beat) for worker, beat in beats if worker and beat},
    )


def read_totals(session: Session) -> Totals:
    """One pass over the audits, grouped by status: bytes, and the recent run times' buckets."""
    seconds = _run_seconds(session.get_bind().dialect.name)
    recent = (Audit.finished_at >= utcnow() - DURATION_WINDOW) & (seconds.is_not(None))
    rows = session.execute(
        select(
            Audit.status,
            func.coalesce(func.sum(Audit.dataset_bytes), 0),
            func.count().filter(recent),
            func.coalesce(func.sum(seconds).filter(recent), 0),
            *(func.count().filter(recent & (seconds <= bound)) for bound in DURATION_BUCKETS_S),
        ).group_by(Audit.status)
    )
    totals = Totals()
    for status, stored, count, sum_s, *cumulative in rows:
        totals.stored_bytes += int(stored)
        totals.durations[AuditStatus(status)] = Durations(count, float(sum_s), list(cumulative))
    return totals


def _run_seconds(dialect: str) -> ColumnElement[float]:
    """finished_at - started_at in seconds; NULL unless both are set."""
    if dialect == "sqlite":  # timestamps are text there; julianday() reads them (to ~0.1 ms)
        return (func.julianday(Audit.finished_at) - func.julianday(Audit.started_at)) * 86400.0
    return type_coerce(extract("epoch", Audit.finished_at - Audit.started_at), Float)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite drops the zone


def _database_up(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "dataset_audit_database_up", "1 when this scrape could read the database, else 0.", value
    )


def _families(live: Live, totals: Totals, now: datetime, timeout_s: float) -> Iterator[Metric]:
    audits = GaugeMetricFamily(
        "dataset_audit_audits", "Audits in the database, by status.", labels=["status"]
    )
    for status in AuditStatus:
        audits.add_metric([status.value], live.audits.get(status, 0))
    yield audits
    yield GaugeMetricFamily(
        "dataset_audit_queued_audits",
        "Audits waiting for a worker.",
        live.audits.get(AuditStatus.QUEUED, 0),
    )
    yield GaugeMetricFamily(
        "dataset_audit_undispatched_audits",
        "Queued audits whose task no broker has taken yet; the reconciler sends them.",
        live.undispatched,
    )
    yield GaugeMetricFamily(
        "dataset_audit_stored_bytes",
        f"Bytes of the uploads in storage (each kept until its audit is deleted); read at most "
        f"every {TOTALS_REFRESH_S:.0f} s.",
        totals.stored_bytes,
        unit="bytes",
    )
    yield _duration_histogram(totals)
    # At least 0: a worker's clock may run ahead of this host's.
    ages = {
        worker: max(0.0, (now - beat).total_seconds()) for worker, beat in live.heartbeats.items()
    }
    heartbeats = GaugeMetricFamily(
        "dataset_audit_worker_heartbeat_age_seconds",
        "Seconds since the last heartbeat of each worker holding a running audit.",
        labels=["worker"],
        unit="seconds",
    )
    for worker, age in sorted(ages.items()):
        heartbeats.add_metric([worker], age)
    yield heartbeats
    yield GaugeMetricFamily(
        "dataset_audit_live_workers",
        "Workers holding a running audit whose heartbeat is younger than HEARTBEAT_TIMEOUT_S.",
        sum(age < timeout_s for age in ages.values()),
    )


def _duration_histogram(totals: Totals) -> GaugeHistogramMetricFamily:
    hours = DURATION_WINDOW / timedelta(hours=1)
    histogram = GaugeHistogramMetricFamily(
        "dataset_audit_audit_duration_seconds",
        f"Run time (finished_at - started_at) of the audits that finished in the last {hours:.0f} "
        f"h, by final status; read at most every {TOTALS_REFRESH_S:.0f} s.",
        labels=["status"],
        unit="seconds",
    )
    bounds = [str(float(bound)) for bound in DURATION_BUCKETS_S] + ["+Inf"]
    for status in FINISHED:
        durations = totals.durations.get(status, Durations())
        counts = [*durations.cumulative, durations.count]
        buckets = list(zip(bounds, counts, strict=True))
        histogram.add_metric([status.value], buckets, durations.sum_s)
    return histogram
