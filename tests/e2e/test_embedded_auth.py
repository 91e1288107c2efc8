"""``dataset-audit serve --auth``, as the README gives it: keys made with the admin CLI, the CLI
client with ``DATASET_AUDIT_API_KEY``; and its worker, killed mid-audit, restarted and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.cli import main
from app.settings import get_settings
from dataset_audit.client import API_KEY_ENV, AuditClient
from tests.dataset_files import write_npz
from tests.e2e.conftest import children, start_serve, wait_until_checkpointed


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, int]]:
    """The URL, data folder and PID of ``dataset-audit serve --auth``."""
    data_dir = tmp_path_factory.mktemp("embedded-auth")
    url, process = start_serve(
        data_dir, "--auth", PROGRESS_INTERVAL_S="0.1", HEARTBEAT_INTERVAL_S="0.5"
    )
    yield url, data_dir, process.pid
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def make_key(data_dir: Path, tenant: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["keys", "create", "--tenant", tenant, "--data-dir", str(data_dir)]) == 0
    get_settings.cache_clear()
    os.environ.pop("DATA_DIR", None)
    return capsys.readouterr().out.split()[-1]


def test_serve_auth_wants_a_key_from_the_admin_cli(
    served: tuple[str, Path, int],
    small_fashion,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, data_dir, _ = served
    assert "API keys required" in (data_dir / "serve.log").read_text()
    path = tmp_path / "d.npz"
    write_npz(path, *small_fashion)
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert main(["submit", str(path), "--server", url, "--preset", "tiny"]) == 2
    assert "API key" in capsys.readouterr().err

    key = make_key(data_dir, "acme", capsys)
    monkeypatch.setenv(API_KEY_ENV, key)
    assert main(["status", "00000000-0000-0000-0000-000000000000", "--server", url]) == 2
    assert "no audit" in capsys.readouterr().err  # authenticated: a plain 404
    with AuditClient(url) as client:
        assert client.list_audits().total == 0
    assert (
        httpx.get(f"{url}/audits", headers={"Authorization": f"Bearer {key}x"}).status_code == 401
    )


def test_the_embedded_worker_killed_mid_audit_is_restarted_and_resumes(
    served: tuple[str, Path, int], small_fashion, tmp_path: Path, capsys
) -> None:
    url, data_dir, serve_pid = served
    path = tmp_path / "d.npz"
    write_npz(path, *small_fashion)
    with AuditClient(url, api_key=make_key(data_dir, "globex", capsys)) as client:
        audit = client.submit(path, preset="tiny")
        wait_until_checkpointed(client, audit.id)
        (worker,) = children(serve_pid)
        os.kill(worker, signal.SIGKILL)
        finished = client.wait(audit.id, timeout=180, poll_interval=0.3)
    assert (finished.status, finished.attempts) == ("succeeded", 2), finished
    assert "the worker exited (-9); restarting it" in (data_dir / "serve.log").read_text()
