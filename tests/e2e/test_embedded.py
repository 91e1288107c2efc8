"""The embedded default, as a new user runs it: ``dataset-audit serve`` (SQLite, no broker
server), then the client and the CLI over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.cli import main
from app.client import AuditClient
from incompat.attacks import PoisonedDataset
from incompat.metrics import detection_metrics
from tests.dataset_files import write_npz

START_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("embedded")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL")
    }
    log_path = data_dir / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port),
             "--data-dir", str(data_dir)],
            env={**env, "PROGRESS_INTERVAL_S": "0.2", "WORKER_DEVICE": "cpu"},
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + START_S
    while b" ready." not in log_path.read_bytes() or not _up(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"dataset-audit serve did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)
    yield url
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("dataset-audit serve did not stop on SIGINT")
    assert (data_dir / "audits.sqlite").exists()
    assert (data_dir / "broker.sqlite").exists()


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow
def test_the_embedded_service_audits_an_upload(
    server: str, planted_fashion: PoisonedDataset, tmp_path: Path
) -> None:
    path = tmp_path / "fashion.npz"
    write_npz(path, planted_fashion.images, planted_fashion.labels)
    seen: list[str] = []
    with AuditClient(server) as client:
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
    server: str,
    planted_fashion: PoisonedDataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "fashion.npz"
    write_npz(path, planted_fashion.images, planted_fashion.labels)
    assert main(["submit", str(path), "--server", server, "--preset", "tiny", "--wait"]) == 0
    out = capsys.readouterr().out
    audit_id = out.split()[1].rstrip(":")
    assert f"Audit {audit_id}: succeeded" in out
    assert "class 7: " in out
    assert "learners voted 1" in out

    assert main(["status", audit_id, "--server", server]) == 0
    assert "succeeded" in capsys.readouterr().out
    assert main(["flagged", audit_id, "--server", server, "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    items = [json.loads(line) for line in lines]
    assert items
    assert all(item["score"] >= 0.5 for item in items)
    assert planted_fashion.is_poison[[item["index"] for item in items]].sum() >= 27


def test_the_cli_reports_errors_with_exit_2(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "00000000-0000-0000-0000-000000000000", "--server", server]) == 2
    assert "404" in capsys.readouterr().err
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"junk" * 64)
    assert main(["submit", str(junk), "--server", server]) == 2
    assert "422" in capsys.readouterr().err
    assert main(["status", "x", "--server", f"http://127.0.0.1:{free_port()}"]) == 2
    assert "cannot reach" in capsys.readouterr().err


@pytest.mark.slow
def test_the_demo_runs_through_the_service(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", "--server", server, "--samples", "3000", "--preset", "tiny", "--seed", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Planted 30 'pattern' poisons (Trouser -> Sneaker)" in out
    recall = float(out.split("recall ")[1].split(",")[0])
    assert recall >= 0.9, out
    assert "class 7 (Sneaker): " in out
