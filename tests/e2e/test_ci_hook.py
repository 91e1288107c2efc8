"""``dataset-audit ci`` against live services, and webhooks delivered to a live receiver."""

from __future__ import annotations

import http.server
import json
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli import main
from app.db import make_engine, make_sessionmaker
from app.services import access
from app.settings import Settings
from app.webhooks import EVENT, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from incompat.research.attacks import PoisonedDataset
from incompat.research.datasets import FASHION_MNIST_CLASSES, balanced_subset
from tests.dataset_files import write_npz
from tests.e2e.conftest import free_port


@pytest.fixture
def poisoned_npz(tmp_path: Path, planted_fashion: PoisonedDataset) -> Path:
    path = tmp_path / "poisoned.npz"
    write_npz(
        path, planted_fashion.images, planted_fashion.labels, classes=list(FASHION_MNIST_CLASSES)
    )
    return path


@pytest.mark.slow
def test_a_poisoned_dataset_fails_the_build_and_a_rerun_reuses_the_audit(
    service_url: str,
    poisoned_npz: Path,
    planted_fashion: PoisonedDataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    junit, report = tmp_path / "audit.xml", tmp_path / "audit.json"
    # The gate's defaults: the verdict decides, no thresholds.
    argv = ["ci", str(poisoned_npz), "--server", service_url, "--preset", "tiny",
            "--junit", str(junit), "--json", str(report)]  # fmt: skip
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "Verdict: POISONED." in out
    assert "Trouser -> Sneaker: " in out
    assert "POISONED: the verdict is poisoned (Trouser -> Sneaker)." in out
    assert "class 7 (Sneaker): " in out
    assert "voted for itself" not in out
    assert f"Report: {service_url}/audits/" in out

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("10", "1", "0")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    failing = [name for name, case in cases.items() if case.find("failure") is not None]
    assert failing == ["class 7 (Sneaker)"]
    failure = cases["class 7 (Sneaker)"].find("failure")
    assert failure is not None
    assert failure.text is not None
    named = {int(i) for i in failure.text.removeprefix("suspected poisons: ").split(", ")}
    poisons = set(planted_fashion.poison_indices.tolist())
    assert len(poisons & named) >= 27
    assert len(named - poisons) <= 3
    body = json.loads(report.read_text())
    assert (body["result"], body["exit_code"], body["reused"]) == ("poisoned", 1, False)
    assert body["verdict"]["implicated"][0]["target_name"] == "Sneaker"

    # The same content, preset and seed again: the finished audit answers, nothing is uploaded.
    started = time.monotonic()
    assert main([*argv[:-4], "--json", str(report)]) == 1
    assert "reusing it" in capsys.readouterr().out
    assert time.monotonic() - started < 10
    again = json.loads(report.read_text())
    assert again["reused"] is True
    assert again["audit"]["id"] == body["audit"]["id"]


@pytest.mark.slow
def test_a_clean_dataset_passes_and_a_threshold_can_still_fail_it(
    embedded_url: str, fashion_mnist, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, labels = fashion_mnist
    subset = balanced_subset(labels, 3000, seed=7)
    path = tmp_path / "clean.npz"
    write_npz(path, images[subset], labels[subset], classes=list(FASHION_MNIST_CLASSES))
    junit, report = tmp_path / "clean.xml", tmp_path / "clean.json"
    argv = ["ci", str(path), "--server", embedded_url, "--preset", "tiny",
            "--junit", str(junit), "--json", str(report)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Verdict: CLEAN." in out
    assert out.rstrip().endswith("CLEAN.")
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("10", "0", "0")
    assert json.loads(report.read_text())["result"] == "clean"

    # A share threshold still fails a clean verdict: the audit is reused, only the gate differs.
    assert main([*argv, "--max-flagged-fraction", "0.001"]) == 1
    out = capsys.readouterr().out
    assert "reusing it" in out
    assert "over the limit of 0.10%" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("11", "1")


def test_errors_exit_2(
    embedded_url: str, tmp_path: Path, poisoned_npz: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    junit, report = tmp_path / "error.xml", tmp_path / "error.json"
    argv = ["ci", str(poisoned_npz), "--server", unreachable, "--junit", str(junit),
            "--json", str(report)]  # fmt: skip
    assert main(argv) == 2
    assert "cannot reach" in capsys.readouterr().err
    # The reports are written on every exit: a pipeline uploads them whatever happened.
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("errors"), suite.get("failures")) == ("1", "1", "0")
    error = suite.find("testcase/error")
    assert error is not None
    assert "cannot reach" in error.get("message", "")
    body = json.loads(report.read_text())
    assert (body["result"], body["exit_code"]) == ("error", 2)

    assert main(["ci", str(tmp_path / "absent.npz"), "--server", embedded_url]) == 2
    assert "no such file" in capsys.readouterr().err

    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a dataset" * 50)
    assert main(["ci", str(junk), "--server", embedded_url]) == 2
    assert "422" in capsys.readouterr().err

    argv = ["ci", str(poisoned_npz), "--server", embedded_url, "--preset", "fast", "--seed", "5",
            "--no-reuse", "--timeout", "1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "did not finish within 1 s" in err
    assert "it goes on at" in err
    report_url = err.rsplit("it goes on at ", 1)[1].strip()
    assert report_url.endswith("/report")
    audit_url = report_url.removesuffix("/report")
    assert httpx.delete(audit_url).status_code in (200, 202)  # leave the worker free


class Receiver(http.server.BaseHTTPRequestHandler):
    """Answers 500 to the first delivery and 204 to the rest, keeping what it got."""

    received: list[tuple[dict[str, str], bytes]] = []  # noqa: RUF012

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(500 if len(self.received) == 1 else 204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/audit", Receiver.received
    server.shutdown()


@pytest.mark.slow
def test_the_webhook_is_signed_retried_and_recorded(
    service_url: str,
    service_settings: Settings,
    poisoned_npz: Path,
    receiver: tuple[str, list[Any]],
) -> None:
    url, received = receiver
    with poisoned_npz.open("rb") as file:
        response = httpx.post(
            f"{service_url}/audits",
            files={"file": (poisoned_npz.name, file)},
            data={"preset": "tiny", "seed": "3", "callback_url": url, "reuse": "false"},
        )
    assert response.status_code == 202, response.text
    audit_id = response.json()["id"]
    deadline = time.monotonic() + 180
    while True:
        audit = httpx.get(f"{service_url}/audits/{audit_id}").json()
        deliveries = audit["webhook"]["deliveries"]
        if any(d["delivered"] for d in deliveries):
            break
        assert time.monotonic() < deadline, audit
        time.sleep(0.5)

    assert audit["status"] == "succeeded"
    assert audit["webhook"]["state"] == "delivered"
    # Whether each attempt delivered, never what the receiver answered.
    assert [(d["attempt"], d["status_code"], d["delivered"]) for d in deliveries] == [
        (1, None, False), (2, None, True),
    ]  # fmt: skip
    assert [d["error"] for d in deliveries] == [None, None]
    assert len(received) == 2
    headers, body = received[-1]
    engine = make_engine(service_settings.resolved_database_url)
    with make_sessionmaker(engine)() as session:
        secret = access.webhook_secret(session, "default")  # the tenant's own
    engine.dispose()
    assert verify(secret, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert not verify("another secret", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    sent = json.loads(body)
    assert sent["event"] == EVENT
    assert sent["audit"]["id"] == audit_id
    assert sent["audit"]["summary"]["n_flagged"] == audit["summary"]["n_flagged"]
