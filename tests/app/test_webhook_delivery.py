"""Webhook deliveries on a real database (SQLite and PostgreSQL) to real receivers on loopback:
refused addresses are never reached, allowed ones only when their network is, a second lookup
cannot rebind the name (over TLS too), and a slow receiver or name lookup is cut at the
deadline. Only name resolution is patched, never the network."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from app.context import Context
from app.db import transaction
from app.services import access
from app.tables import Audit, utcnow
from app.views import to_read
from dataset_audit.schemas import AuditStatus, WebhookState
from tests.app.test_callback_urls import LOCAL_NAMES, LOOPBACK_SPELLINGS
from tests.app.webhook_receivers import Receiver, receiving, stalling
from worker.delivery import deliver
from worker.webhook_client import post

_real_getaddrinfo = socket.getaddrinfo


def allowing(context: Context, networks: str, **more: Any) -> Context:
    settings = context.settings.model_copy(update={"webhook_allowed_networks": networks, **more})
    return Context(settings, context.engine, context.sessions, context.reads, context.storage,
                   context.celery)  # fmt: skip


def ended_audit(
    context: Context, url: str, *, tenant: str = "default",
    status: AuditStatus = AuditStatus.SUCCEEDED,
) -> uuid.UUID:  # fmt: skip
    """An audit that has ended with a callback URL, its delivery pending (bypassing the upload's
    check: what a name that changed its answer would look like); a queued one with ``status``."""
    audit_id = uuid.uuid4()
    with transaction(context.sessions) as session:
        access.ensure_tenant(session, tenant)
        session.add(
            Audit(
                id=audit_id, tenant=tenant, status=status, preset="tiny", seed=0,
                dataset_format="npz", dataset_sha256="0" * 64, dataset_bytes=1,
                storage_key=f"audits/{audit_id}/dataset.npz", n_samples=10, n_classes=2,
                image_shape=[8, 8], callback_url=url,
                finished_at=utcnow() if status.finished else None,
                webhook_state=WebhookState.PENDING if status.finished else None,
            )
        )  # fmt: skip
    return audit_id


def webhook_of(context: Context, audit_id: uuid.UUID) -> dict[str, Any]:
    with context.sessions() as session:
        audit = session.get(Audit, audit_id)
        assert audit is not None
        return to_read(audit).model_dump(mode="json")["webhook"]


def secret_of(context: Context, tenant: str) -> str:
    with context.sessions() as session:
        return access.webhook_secret(session, tenant)


def test_every_local_spelling_is_refused_at_delivery_and_never_reached(
    webhook_context: Context, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "worker.delivery")
    with receiving("127.0.0.1") as v4, receiving("::1") as v6:
        for host, address in LOOPBACK_SPELLINGS.items():
            port = v6.port if address.version == 6 and address.ipv4_mapped is None else v4.port
            for url in (f"http://{host}:{port}/hook", f"https://{host}:{port}/hook"):
                audit_id = ended_audit(webhook_context, url)
                assert deliver(webhook_context, audit_id) is not None  # a retry is due
                assert deliver(webhook_context, audit_id) is None  # the last of two attempts
                webhook = webhook_of(webhook_context, audit_id)
                assert webhook["state"] == "failed"
                assert [(d["attempt"], d["delivered"]) for d in webhook["deliveries"]] == [
                    (1, False), (2, False),
                ]  # fmt: skip
                assert all(d["status_code"] is d["error"] is None for d in webhook["deliveries"])
        for name in [*LOCAL_NAMES, "localhost"]:
            outcome = post(f"http://{name}:{v4.port}/", b"{}", {}, allowed=(), deadline_s=3)
            assert not outcome.delivered
        for port in (6379, 5432):  # the deployment's Redis and PostgreSQL
            outcome = post(f"http://127.0.0.1:{port}/", b"{}", {}, allowed=(), deadline_s=3)
            assert outcome.detail.startswith("refused"), outcome
        assert (v4.connections, v6.connections) == (0, 0)
    assert "refused: " in caplog.text  # the operators' log says why; the tenant does not see it


def rebinding(monkeypatch: pytest.MonkeyPatch, name: str, *answers: list[str]) -> list[str]:
    """Patch name resolution: ``name`` answers ``answers[0]`` first, then each next one (the
    last for ever); other hosts resolve as usual. The hosts looked up, in order."""
    looked_up: list[str] = []
    remaining = list(answers)

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(str(host))
        if host != name:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        addresses = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


@contextmanager
def same_port_pair() -> Iterator[tuple[Receiver, Receiver]]:
    """Receivers on 127.0.0.2 and 127.0.0.1 with one port: a rebinding changes the address only."""
    for _ in range(20):
        with ExitStack() as stack:
            checked = stack.enter_context(receiving("127.0.0.2"))
            try:
                victim = stack.enter_context(receiving("127.0.0.1", checked.port))
            except OSError:
                continue
            yield checked, victim
            return
    pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2")


def test_a_name_is_not_rebound_between_its_check_and_the_connection(
    webhook_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: a name answers an allowed address when checked and a refused one when the
    HTTP client looks it up again to connect. The connection goes to the checked address."""
    allowed = allowing(webhook_context, "127.0.0.2/32")
    with same_port_pair() as (checked, victim):
        looked_up = rebinding(monkeypatch, "hooks.test", ["127.0.0.2"], ["127.0.0.1"])
        audit_id = ended_audit(allowed, f"http://hooks.test:{checked.port}/hook")
        assert deliver(allowed, audit_id) is None
        assert looked_up.count("hooks.test") == 1
        # One answer with a refused address first: the allowed one is connected to.
        rebinding(monkeypatch, "mixed.test", ["127.0.0.1", "127.0.0.2"])
        second = ended_audit(allowed, f"http://mixed.test:{checked.port}/hook")
        assert deliver(allowed, second) is None
    assert [r.headers["Host"] for r in checked.requests] == [
        f"hooks.test:{checked.port}", f"mixed.test:{checked.port}",
    ]  # fmt: skip
    assert victim.connections == 0
    assert webhook_of(webhook_context, audit_id)["state"] == "delivered"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for the name ``hooks.test`` only (no IP address)."""
    folder = tmp_path_factory.mktemp("tls")
    names = ("ca.key", "ca.pem", "key.pem", "request.csr", "cert.pem")
    ca_key, ca, key, request, cert = (folder / name for name in names)
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=DNS:hooks.test\n")
    for command in (
        f"req -x509 -newkey rsa:2048 -nodes -keyout {ca_key} -out {ca} -days 2 -subj /CN=test-ca",
        f"req -newkey rsa:2048 -nodes -keyout {key} -out {request} -subj /CN=hooks.test",
        f"x509 -req -in {request} -CA {ca} -CAkey {ca_key} -CAcreateserial -out {cert} "
        f"-days 2 -extfile {ext}",
    ):
        subprocess.run(["openssl", *command.split()], check=True, capture_output=True)
    return ca, cert, key


def test_tls_is_checked_on_the_name_while_connecting_to_the_checked_address(
    webhook_context: Context, monkeypatch: pytest.MonkeyPatch, tls_files: tuple[Path, Path, Path]
) -> None:
    ca, cert, key = tls_files
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the test CA, as an operator would add theirs
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    allowed = allowing(webhook_context, "127.0.0.2/32")
    with receiving("127.0.0.2", tls=server_tls) as hooks:
        rebinding(monkeypatch, "hooks.test", ["127.0.0.2"], ["127.0.0.1"])
        audit_id = ended_audit(allowed, hooks.url(host="hooks.test"))
        assert deliver(allowed, audit_id) is None
    assert hooks.server_names == ["hooks.test"]
    assert [r.headers["Host"] for r in hooks.requests] == [f"hooks.test:{hooks.port}"]
    assert webhook_of(webhook_context, audit_id)["state"] == "delivered"


def test_a_receiver_that_drips_its_answer_is_cut_at_the_deadline(webhook_context: Context) -> None:
    allowed = allowing(webhook_context, "127.0.0.1/32", webhook_timeout_s=2.0)
    with stalling("127.0.0.1", every_s=0.5) as stall:
        audit_id = ended_audit(allowed, f"http://127.0.0.1:{stall.port}/hook")
        started = time.monotonic()
        retry_in = deliver(allowed, audit_id)
        took = time.monotonic() - started
    assert 2.0 <= took < 3.0, took  # the whole attempt, not each read
    assert len(stall.opened) == 1
    # The retry is timed from the attempt's start, so its length does not show.
    assert retry_in is not None
    assert retry_in < allowed.settings.webhook_retry_base_s - 1.5
    assert [d["delivered"] for d in webhook_of(webhook_context, audit_id)["deliveries"]] == [False]


def test_a_slow_name_lookup_is_cut_at_the_deadline(
    webhook_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(5)
        return _real_getaddrinfo(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    started = time.monotonic()
    outcome = post("http://slow.test/hook", b"{}", {}, allowed=(), deadline_s=1.0)
    assert time.monotonic() - started < 1.5
    assert not outcome.delivered
    assert "deadline" in outcome.detail


def test_a_receiver_is_never_reached_unless_its_network_is_allowed(
    webhook_context: Context,
) -> None:
    with receiving("127.0.0.1") as hooks:
        refused_id = ended_audit(webhook_context, hooks.url())
        deliver(webhook_context, refused_id)
        assert hooks.connections == 0
        allowed_id = ended_audit(allowing(webhook_context, "127.0.0.0/8"), hooks.url())
        deliver(allowing(webhook_context, "127.0.0.0/8"), allowed_id)
        assert (hooks.connections, len(hooks.requests)) == (1, 1)
