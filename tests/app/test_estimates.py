"""Cost estimates over HTTP: a dry run stores and queues nothing, every audit records its
estimate, and the throughput is learnt from the service's own finished audits."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.db import transaction
from app.settings import Settings
from app.tables import Audit
from tests.app.test_api import context_of, finish_with_scores, upload
from tests.dataset_files import write_npz

_PRESET = "fast"


def dry_run(client: TestClient, path: Path, **fields: str) -> Any:
    with path.open("rb") as file:
        return client.post(
            "/audits", params={"dry_run": "true"}, files={"file": (path.name, file)},
            data={"preset": _PRESET, **fields},
        )  # fmt: skip


def audits(client: TestClient) -> int:
    with context_of(client).sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Audit)) or 0)


def test_a_dry_run_answers_the_estimate_and_keeps_nothing(
    client: TestClient, settings: Settings, npz_path: Path
) -> None:
    response = dry_run(client, npz_path)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True
    assert (body["preset"], body["n_samples"], body["image_shape"]) == (_PRESET, 600, [28, 28])
    estimate = body["estimate"]
    assert estimate["device"] == "cpu"
    assert estimate["seconds"] > 0
    assert estimate["device_bytes"] > 600 * 28 * 28
    assert "built-in" in estimate["basis"]
    assert audits(client) == 0
    assert not list((settings.data_dir / "storage").rglob("*.npz"))

    junk = npz_path.with_name("junk.npz")
    junk.write_bytes(b"junk" * 64)
    refused = dry_run(client, junk)
    assert refused.status_code == 422
    assert "junk.npz" in refused.json()["detail"]


def test_an_audit_records_its_estimate(client: TestClient, npz_path: Path) -> None:
    created = upload(client, npz_path, preset=_PRESET)
    assert created.status_code == 202, created.text
    estimate = created.json()["estimate"]
    assert estimate["seconds"] > 0
    assert estimate == client.get(f"/audits/{created.json()['id']}").json()["estimate"]
    assert estimate["seconds"] == dry_run(client, npz_path).json()["estimate"]["seconds"]


def test_the_throughput_is_learnt_from_finished_audits(
    client: TestClient, npz_path: Path, tmp_path: Path
) -> None:
    """An audit that took 30 s of compute on a GPU: the next estimate for the same dataset says
    30 s on cuda, learnt from it."""
    context = context_of(client)
    created = upload(client, npz_path, preset=_PRESET)
    audit_id = uuid.UUID(created.json()["id"])
    finish_with_scores(context, audit_id, np.full(600, 0.1, np.float32))
    with transaction(context.sessions) as session:
        summary = session.scalar(select(Audit.summary).where(Audit.id == audit_id)) or {}
        summary |= {"device": "cuda:0", "timings": {"total": 30.0}, "config": {"arch": "small_cnn"}}
        session.execute(update(Audit).where(Audit.id == audit_id).values(summary=summary))

    estimate = dry_run(client, npz_path).json()["estimate"]
    assert estimate["device"] == "cuda"
    assert estimate["seconds"] == 30.0
    assert estimate["basis"] == "the throughput of the last 1 finished audits on cuda"

    bigger = tmp_path / "bigger.npz"
    images = np.zeros((1200, 28, 28), np.uint8)
    write_npz(bigger, images, np.arange(1200) % 10)
    assert dry_run(client, bigger).json()["estimate"]["seconds"] > 50.0
