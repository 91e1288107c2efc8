"""``dataset-audit serve`` delivers webhooks too: its one worker takes both queues."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.db import make_engine, make_sessionmaker
from app.services import access
from app.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.app.webhook_receivers import receiving
from tests.dataset_files import write_npz
from tests.e2e.conftest import start_serve


@pytest.mark.slow
def test_the_embedded_service_delivers_a_signed_webhook(small_fashion: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = tmp_path / "d.npz"
    write_npz(path, *small_fashion)
    url, serve = start_serve(data_dir, WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32")
    try:
        with receiving("127.0.0.1") as hooks, path.open("rb") as file:
            response = httpx.post(
                f"{url}/audits",
                files={"file": (path.name, file)},
                data={"preset": "tiny", "callback_url": hooks.url()},
            )
            assert response.status_code == 202, response.text
            audit_id = response.json()["id"]
            deadline = time.monotonic() + 300
            while True:
                audit = httpx.get(f"{url}/audits/{audit_id}").json()
                if audit["webhook"]["state"] != "pending":
                    break
                assert time.monotonic() < deadline, audit
                time.sleep(0.5)
            local = httpx.post(
                f"{url}/audits",
                files={"file": (path.name, path.read_bytes())},
                data={"callback_url": f"http://127.0.0.2:{hooks.port}/", "reuse": "false"},
            )
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
    assert audit["status"] == "succeeded"
    assert audit["webhook"]["state"] == "delivered"
    assert local.status_code == 422  # only the allowed network
    (got,) = hooks.requests
    engine = make_engine(f"sqlite:///{data_dir / 'audits.sqlite'}")
    with make_sessionmaker(engine)() as session:
        secret = access.webhook_secret(session, "default")
    engine.dispose()
    assert verify(secret, got.headers[TIMESTAMP_HEADER], got.body, got.headers[SIGNATURE_HEADER])
    assert json.loads(got.body)["audit"]["id"] == audit_id
