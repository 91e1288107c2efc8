"""``dataset-audit serve`` stopped the way supervisors stop it: SIGTERM (``docker stop``,
systemd, ``kill``) and SIGKILL. Its worker must not outlive it, and the audit it was running must
be queued again and resume from its checkpoint when ``serve`` next starts."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from dataset_audit.client import AuditClient
from tests.dataset_files import write_npz
from tests.e2e.conftest import alive, children, start_serve, wait_until_checkpointed

FAST_PROGRESS = {"PROGRESS_INTERVAL_S": "0.1", "HEARTBEAT_INTERVAL_S": "0.5"}


@pytest.mark.parametrize(
    ("stop", "exit_code"), [(signal.SIGTERM, 0), (signal.SIGKILL, -signal.SIGKILL)]
)
def test_serve_stopped_mid_audit_takes_its_worker_along_and_resumes_on_restart(
    stop: signal.Signals, exit_code: int, small_fashion, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = tmp_path / "d.npz"
    write_npz(path, *small_fashion)
    url, serve = start_serve(data_dir, **FAST_PROGRESS)
    (worker,) = children(serve.pid)
    with AuditClient(url) as client:
        audit = client.submit(path, preset="tiny")
        wait_until_checkpointed(client, audit.id)

    serve.send_signal(stop)
    assert serve.wait(30) == exit_code
    deadline = time.monotonic() + 20
    while alive(worker):
        assert time.monotonic() < deadline, f"the worker outlived serve ({stop.name})"
        time.sleep(0.1)

    url, serve = start_serve(data_dir, **FAST_PROGRESS)
    try:
        with AuditClient(url) as client:
            finished = client.wait(audit.id, timeout=180, poll_interval=0.3)
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
    assert (finished.status, finished.attempts) == ("succeeded", 2), finished
    assert "resuming from a checkpoint" in (data_dir / "serve.log").read_text()
