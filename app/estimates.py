"""Cost estimates before an audit runs: ``incompat.cost``'s model with a throughput the service
learns from its own finished audits, so that the figures fit its workers' devices.

The device is the workers' (``WORKER_DEVICE``, or, when that is ``auto``, the one the latest
audits ran on). The throughput is the median that the latest finished audits on that kind of
device show (each audit's compute seconds against the passes its preset makes), or the built-in
figure measured on a 2-core CPU until there are some; a device with neither gets no seconds.
"""

from __future__ import annotations

import statistics
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.tables import Audit
from dataset_audit.schemas import AuditStatus, CostEstimate
from incompat.config import PRESETS, get_preset
from incompat.cost import THROUGHPUT, estimate, throughput_of

# The latest finished audits the throughput is learnt from.
_HISTORY = 20


def estimate_cost(
    session: Session, worker_device: str, preset: str, n: int, shape: tuple[int, ...]
) -> CostEstimate:
    config = get_preset(preset)
    history = _finished(session)
    kind = _kind(worker_device) if worker_device != "auto" else _latest_kind(history)
    rates = [
        throughput_of(get_preset(audit.preset), audit.n_samples, tuple(audit.image_shape), total)
        for audit, summary, total in history
        if audit.preset in PRESETS  # an engine upgrade may have dropped a preset
        and _kind(str(summary.get("device", ""))) == kind
        and summary.get("config", {}).get("arch") == config.arch
    ]
    if rates:
        rate: float | None = statistics.median(rates)
        basis = f"the throughput of the last {len(rates)} finished audits on {kind}"
    else:
        rate = THROUGHPUT.get((kind, config.arch))
        basis = (
            f"the built-in throughput of {config.arch} on a 2-core CPU"
            if rate is not None
            else f"no throughput known for {config.arch} on {kind} before an audit finishes there"
        )
    cost = estimate(config, n, shape, device_kind=kind, throughput=rate)
    return CostEstimate(
        device=kind,
        seconds=None if cost.seconds is None else round(cost.seconds, 1),
        device_bytes=cost.device_bytes,
        epoch_equivalents=round(cost.passes.train, 1),
        basis=basis,
    )


def _finished(session: Session) -> list[tuple[Audit, dict[str, Any], float]]:
    audits = session.scalars(
        select(Audit)
        .where(Audit.status == AuditStatus.SUCCEEDED, Audit.summary.is_not(None))
        .order_by(Audit.finished_at.desc())
        .limit(_HISTORY)
    ).all()
    found = []
    for audit in audits:
        summary = audit.summary or {}
        total = summary.get("timings", {}).get("total")
        if isinstance(total, (int, float)) and total > 0 and audit.image_shape:
            found.append((audit, summary, float(total)))
    return found


def _latest_kind(history: list[tuple[Audit, dict[str, Any], float]]) -> str:
    for _, summary, _ in history:
        if summary.get("device"):
            return _kind(str(summary["device"]))
    return "cpu"


def _kind(device: str) -> str:
    return device.split(":", 1)[0] or "cpu"
