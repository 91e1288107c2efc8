"""Datasets as people have them, uploaded over HTTP and audited by the worker's runner (without
Celery): an ImageFolder zip and a Hugging Face parquet of real images in many sizes, modes and
formats, audited at one size, their flagged samples named by path."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.context import Context
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from dataset_audit.schemas import AuditStatus
from tests.dataset_files import (
    loaded_order,
    varied,
    write_hub_parquet,
    write_varied_imagefolder_zip,
)
from tests.worker.running import run_to_the_end


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", progress_interval_s=0.0, worker_device="cpu")
    upgrade(settings.resolved_database_url)
    return settings


def submit(client: TestClient, path: Path) -> uuid.UUID:
    with path.open("rb") as file:
        response = client.post(
            "/audits", files={"file": (path.name, file)}, data={"preset": "tiny"}
        )
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


def test_a_mixed_zip_and_a_hub_parquet_are_audited_at_one_size(
    settings: Settings, tmp_path: Path, small_fashion: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = small_fashion
    files = varied(images)  # 600 Fashion-MNIST images at three sizes, in nine encodings
    members = write_varied_imagefolder_zip(tmp_path / "mixed.zip", files, labels)
    paths = [f"train/{index:03d}.{ext}" for index, (ext, _) in enumerate(files)]
    parquet = tmp_path / "train-00000-of-00001.parquet"
    write_hub_parquet(parquet, [data for _, data in files], labels, paths)

    context = Context.from_settings(settings)
    with TestClient(create_app(settings)) as client:
        audits = {"zip": submit(client, tmp_path / "mixed.zip"), "parquet": submit(client, parquet)}
        for audit_id in audits.values():
            assert run_to_the_end(context, audit_id) == AuditStatus.SUCCEEDED
        in_loaded_order = [members[index] for index in loaded_order(members)]
        for kind, named in (("zip", in_loaded_order), ("parquet", paths)):
            audit = client.get(f"/audits/{audits[kind]}").json()
            assert (audit["status"], audit["dataset"]["image_shape"]) == ("succeeded", [32, 32, 3])
            flagged = client.get(f"/audits/{audits[kind]}/flagged", params={"limit": 1000}).json()
            assert flagged["total"] > 0, kind
            assert [item["path"] for item in flagged["items"]] == [
                named[item["index"]] for item in flagged["items"]
            ]
