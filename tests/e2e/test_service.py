"""Upload a poisoned Fashion-MNIST subset in each format; a real Celery worker audits it with the
real engine; the flagged samples come back over HTTP and catch the planted poisons."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.queue import send_audit
from incompat.research.attacks import PoisonedDataset
from incompat.research.datasets import FASHION_MNIST_CLASSES
from incompat.research.metrics import detection_metrics
from tests.dataset_files import loaded_order, write_imagefolder_zip, write_npz, write_parquet

# The engine's own detection test bounds for this setup (tests/incompat/test_detection_fashion.py).
MIN_RECALL = 0.9
MAX_CLEAN_FLAG_RATE = 0.10
FINISH_S = 240


def wait_until_finished(client: TestClient, audit_id: str, timeout: float = FINISH_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        audit = client.get(f"/audits/{audit_id}").json()
        if audit["status"] in ("succeeded", "failed", "cancelled"):
            return audit
        assert time.monotonic() < deadline, f"audit still {audit['status']}: {audit}"
        time.sleep(0.5)


def all_flagged(client: TestClient, audit_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = client.get(
            f"/audits/{audit_id}/flagged", params={"limit": 50, "offset": len(items)}
        ).json()
        items += page["items"]
        if len(items) >= page["total"]:
            return items


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["npz", "imagefolder", "parquet"])
def test_planted_poisons_are_flagged_in_every_format(
    service: TestClient, planted_fashion: PoisonedDataset, tmp_path: Path, fmt: str
) -> None:
    images, labels = planted_fashion.images, planted_fashion.labels
    # Folder names that sort like the labels, as ImageFolder labels classes in sorted name order.
    classes = [f"{i}_{name.replace('/', '-')}" for i, name in enumerate(FASHION_MNIST_CLASSES)]
    order = np.arange(labels.size)  # loaded index -> index in `planted_fashion`
    if fmt == "npz":
        path = tmp_path / "fashion.npz"
        write_npz(path, images, labels, classes=classes)
    elif fmt == "imagefolder":
        path = tmp_path / "fashion.zip"
        order = loaded_order(write_imagefolder_zip(path, images, labels, classes=classes))
    else:
        path = tmp_path / "fashion.parquet"
        write_parquet(path, images, labels, classes=classes)

    with path.open("rb") as file:
        response = service.post(
            "/audits", files={"file": (path.name, file)}, data={"preset": "tiny", "seed": "0"}
        )
    assert response.status_code == 202, response.text
    assert response.json()["dataset"]["format"] == fmt
    audit = wait_until_finished(service, response.json()["id"])
    assert audit["status"] == "succeeded", audit

    flagged = all_flagged(service, audit["id"])
    assert len(flagged) == audit["summary"]["n_flagged"]
    is_flagged = np.zeros(labels.size, dtype=bool)
    is_flagged[order[[item["index"] for item in flagged]]] = True
    metrics = detection_metrics(is_flagged, planted_fashion.is_poison)
    assert metrics.n_poisons == 30
    assert metrics.recall >= MIN_RECALL, metrics
    assert metrics.clean_flag_rate <= MAX_CLEAN_FLAG_RATE, metrics

    target = next(c for c in audit["summary"]["classes"] if c["label"] == 7)
    assert (target["name"], target["flagged_voted_label"]) == ("7_Sneaker", 1)
    for group in audit["summary"]["trigger_groups"]:  # named like the classes, when there are any
        assert group["name"] == classes[group["label"]]
    if fmt == "imagefolder":
        for item in flagged:
            assert item["path"].split("/")[1] == classes[item["label"]]

    npy = service.get(f"/audits/{audit['id']}/scores", params={"format": "npy"}).content
    scores = np.load(io.BytesIO(npy), allow_pickle=False)
    assert scores.shape == (labels.size,)
    assert sorted(np.flatnonzero(scores >= 0.5).tolist()) == sorted(i["index"] for i in flagged)


@pytest.mark.slow
def test_a_running_audit_is_cancelled_and_a_redelivery_is_a_no_op(
    service: TestClient, planted_fashion: PoisonedDataset, tmp_path: Path
) -> None:
    path = tmp_path / "fashion.npz"
    write_npz(path, planted_fashion.images, planted_fashion.labels)
    with path.open("rb") as file:
        audit_id = service.post(
            "/audits", files={"file": (path.name, file)}, data={"preset": "fast"}
        ).json()["id"]
    deadline = time.monotonic() + 60
    while (audit := service.get(f"/audits/{audit_id}").json())["status"] == "queued":
        assert time.monotonic() < deadline, audit
        time.sleep(0.2)
    assert audit["status"] == "running", audit

    # Running in parts (AUDIT_PARALLEL_BAGS), it is cancelled at once; its running part stops
    # at its next progress report.
    response = service.delete(f"/audits/{audit_id}")
    assert response.status_code == 200
    audit = wait_until_finished(service, audit_id, timeout=60)
    assert (audit["status"], audit["error"]) == ("cancelled", "cancelled while running")

    # The same task delivered again finds the audit finished and does nothing.
    send_audit(service.app.state.context.celery, uuid.UUID(audit_id))  # type: ignore[attr-defined]
    time.sleep(2)
    again = service.get(f"/audits/{audit_id}").json()
    assert (again["status"], again["attempts"], again["finished_at"]) == (
        "cancelled", 1, audit["finished_at"],
    )  # fmt: skip
