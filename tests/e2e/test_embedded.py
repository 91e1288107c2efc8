"""The embedded default, as a new user runs it: ``dataset-audit serve`` (SQLite, no broker
server), then the client and the CLI over real HTTP."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.cli import main
from dataset_audit.client import AuditClient
from incompat.research.attacks import PoisonedDataset
from incompat.research.metrics import detection_metrics
from tests.dataset_files import write_npz
from tests.e2e.conftest import free_port


@pytest.mark.slow
def test_the_embedded_service_audits_an_upload(
    embedded_url: str, planted_fashion: PoisonedDataset, tmp_path: Path
) -> None:
    path = tmp_path / "fashion.npz"
    write_npz(path, planted_fashion.images, planted_fashion.labels)
    seen: list[str] = []
    with AuditClient(embedded_url) as client:
        audit = client.submit(path, preset="tiny", name="embedded")
        assert (audit.status, audit.name) == ("queued", "embedded")
        audit = client.wait(
            audit.id, on_progress=lambda a: seen.append(str(a.status)), poll_interval=0.3,
            timeout=240,
        )  # fmt: skip
        assert audit.status == "succeeded", audit.error
        flagged = client.flagged(audit.id, sort="score")
        scores = client.scores(audit.id)

    assert "succeeded" in seen
    is_flagged = np.zeros(planted_fashion.labels.size, dtype=bool)
    is_flagged[[item.index for item in flagged]] = True
    metrics = detection_metrics(is_flagged, planted_fashion.is_poison)
    assert metrics.recall >= 0.9, metrics
    assert metrics.clean_flag_rate <= 0.10, metrics
    assert [item.rank for item in flagged] == list(range(len(flagged)))
    np.testing.assert_array_equal(np.flatnonzero(scores >= 0.5), np.flatnonzero(is_flagged))


@pytest.mark.slow
def test_the_cli_submits_waits_and_lists_flagged(
    embedded_url: str,
    planted_fashion: PoisonedDataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "fashion.npz"
    write_npz(path, planted_fashion.images, planted_fashion.labels)
    assert main(["submit", str(path), "--server", embedded_url, "--preset", "tiny", "--wait"]) == 0
    out = capsys.readouterr().out
    audit_id = out.split()[1].rstrip(":")
    assert f"Audit {audit_id}: succeeded" in out
    assert "Verdict: POISONED." in out
    assert "class 1 -> class 7: " in out
    assert "class 7: " in out
    assert "most look like class 1" in out

    assert main(["status", audit_id, "--server", embedded_url]) == 0
    assert "succeeded" in capsys.readouterr().out
    assert main(["flagged", audit_id, "--server", embedded_url, "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    items = [json.loads(line) for line in lines]
    assert items
    assert all(item["score"] >= 0.5 for item in items)
    assert planted_fashion.is_poison[[item["index"] for item in items]].sum() >= 27
    suspected = [item["index"] for item in items if item["kind"] == "suspected_poison"]
    assert planted_fashion.is_poison[suspected].sum() >= 27
    assert planted_fashion.is_poison[suspected].mean() >= 0.9


def test_the_cli_estimates_an_audit_without_starting_it(
    embedded_url: str, small_fashion, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fashion.npz"
    write_npz(path, *small_fashion)
    before = AuditClient(embedded_url).list_audits().total
    assert main(["estimate", str(path), "--server", embedded_url, "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "600 images of 28x28 in 10 classes, preset tiny:" in out
    assert "time on one cpu worker: about " in out
    assert "device memory: about " in out
    assert AuditClient(embedded_url).list_audits().total == before


def test_the_cli_reports_errors_with_exit_2(
    embedded_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "00000000-0000-0000-0000-000000000000", "--server", embedded_url]) == 2
    assert "404" in capsys.readouterr().err
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"junk" * 64)
    assert main(["submit", str(junk), "--server", embedded_url]) == 2
    assert "422" in capsys.readouterr().err
    unreachable = f"http://127.0.0.1:{free_port()}"
    assert main(["status", str(uuid.uuid4()), "--server", unreachable]) == 2
    assert "cannot reach" in capsys.readouterr().err
    assert main(["status", "x", "--server", embedded_url]) == 2
    assert "'x' is not an audit id" in capsys.readouterr().err


@pytest.mark.slow
def test_the_demo_runs_through_the_service(
    embedded_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "demo",
        "--server",
        embedded_url,
        "--samples",
        "3000",
        "--preset",
        "tiny",
        "--seed",
        "0",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Planted 30 'pattern' poisons (Trouser -> Sneaker)" in out
    recall = float(out.split("recall ")[1].split(",")[0])
    assert recall >= 0.9, out
    assert "class 7 (Sneaker): " in out


def test_the_cli_prints_the_report_address(
    embedded_url: str, small_fashion, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "small.npz"
    write_npz(path, *small_fashion)
    with AuditClient(embedded_url) as client:
        audit = client.submit(path, preset="tiny")
    assert main(["report", str(audit.id), "--server", embedded_url]) == 0
    url = capsys.readouterr().out.strip()
    assert url == f"{embedded_url}/audits/{audit.id}/report"
    assert httpx.get(url).status_code == 200
    assert main(["report", "00000000-0000-0000-0000-000000000000", "--server", embedded_url]) == 2
