"""Webhooks per tenant, on a real database (SQLite and PostgreSQL) with real receivers: each
tenant's deliveries are signed with its own secret, which the CLI shows once and rotates, and a
tenant's pending deliveries are bounded, cancelled audits' included."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import lifecycle
from app.cli import main
from app.context import Context
from app.db import transaction
from app.main import create_app
from app.services import access
from app.settings import Settings
from app.tables import Audit
from app.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from dataset_audit.schemas import AuditStatus, WebhookState
from tests.app.test_api import upload
from tests.app.test_webhook_delivery import allowing, ended_audit, secret_of, webhook_of
from tests.app.webhook_receivers import receiving
from worker.delivery import deliver


def test_an_allowed_receiver_gets_a_delivery_signed_with_its_tenants_secret(
    webhook_context: Context,
) -> None:
    allowed = allowing(webhook_context, "127.0.0.1/32")
    with receiving("127.0.0.1") as acme_hooks, receiving("127.0.0.1") as globex_hooks:
        acme = ended_audit(allowed, acme_hooks.url(), tenant="acme")
        globex = ended_audit(allowed, globex_hooks.url(), tenant="globex")
        assert deliver(allowed, acme) is None
        assert deliver(allowed, globex) is None
        assert deliver(allowed, acme) is None  # a duplicate task: delivered once
    acme_secret, globex_secret = (
        secret_of(webhook_context, "acme"),
        secret_of(webhook_context, "globex"),
    )
    assert acme_secret != globex_secret
    assert acme_secret.startswith("whsec_")
    (got,) = acme_hooks.requests
    (other,) = globex_hooks.requests
    stamp, signature = got.headers[TIMESTAMP_HEADER], got.headers[SIGNATURE_HEADER]
    assert verify(acme_secret, stamp, got.body, signature)
    assert not verify(globex_secret, stamp, got.body, signature)  # no tenant signs for another
    assert not verify(acme_secret, other.headers[TIMESTAMP_HEADER], other.body,
                      other.headers[SIGNATURE_HEADER])  # fmt: skip
    assert json.loads(got.body)["audit"]["id"] == str(acme)
    assert got.headers["Host"] == f"127.0.0.1:{acme_hooks.port}"
    webhook = webhook_of(webhook_context, acme)
    assert webhook["state"] == "delivered"
    assert [(d["attempt"], d["delivered"], d["status_code"]) for d in webhook["deliveries"]] == [
        (1, True, None)
    ]


def test_a_rotated_secret_signs_the_next_delivery_and_the_cli_shows_it_once(
    webhook_context: Context,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATA_DIR", raising=False)  # the CLI sets it from --data-dir
    data_dir = ["--data-dir", str(tmp_path / "cli")]
    assert main(["keys", "create", "--tenant", "acme", *data_dir]) == 0
    out = capsys.readouterr().out
    assert out.split()[-1].startswith("dak_")  # the key stays the last word
    first = next(word for word in out.split() if word.startswith("whsec_"))
    assert main(["keys", "create", "--tenant", "acme", *data_dir]) == 0
    assert "whsec_" not in capsys.readouterr().out  # shown when made, only
    assert main(["tenants", "set", "acme", "--max-active-audits", "4", *data_dir]) == 0
    assert "whsec_" not in capsys.readouterr().out
    assert main(["tenants", "set", "acme", "--rotate-webhook-secret", *data_dir]) == 0
    rotated = capsys.readouterr().out.split()[-1]
    assert rotated.startswith("whsec_")
    assert rotated != first
    assert main(["tenants", "set", "globex", *data_dir]) == 0  # a new tenant gets its own
    assert capsys.readouterr().out.split()[-1] not in (first, rotated)

    allowed = allowing(webhook_context, "127.0.0.1/32")
    with receiving("127.0.0.1") as hooks:
        before = ended_audit(allowed, hooks.url(), tenant="acme")
        deliver(allowed, before)
        with transaction(webhook_context.sessions) as session:
            new = access.rotate_webhook_secret(session, "acme")
        after = ended_audit(allowed, hooks.url(), tenant="acme")
        deliver(allowed, after)
    old_delivery, new_delivery = hooks.requests
    for got, good, bad in ((new_delivery, new, None), (old_delivery, None, new)):
        stamp, signature = got.headers[TIMESTAMP_HEADER], got.headers[SIGNATURE_HEADER]
        if good is not None:
            assert verify(good, stamp, got.body, signature)
        if bad is not None:
            assert not verify(bad, stamp, got.body, signature)


def test_pending_deliveries_are_bounded_per_tenant_and_cancels_count(
    settings: Settings, npz_path: Path
) -> None:
    """The upload-and-cancel loop: each cancelled audit queues a webhook. Past
    WEBHOOK_MAX_OUTSTANDING pending, the tenant's deliveries are dropped, visibly; another
    tenant's are not, and a concluded delivery frees a place."""
    bounded = settings.model_copy(update={"webhook_max_outstanding": 3})
    with TestClient(create_app(bounded)) as client:
        states = []
        for _ in range(5):
            audit = upload(client, npz_path, callback_url="https://hooks.example/x", reuse="false")
            assert client.delete(f"/audits/{audit.json()['id']}").status_code == 200
            shown = client.get(f"/audits/{audit.json()['id']}").json()
            assert shown["status"] == "cancelled"
            states.append((shown["id"], shown["webhook"]["state"]))
        assert [state for _, state in states] == ["pending"] * 3 + ["dropped"] * 2
        context = client.app.state.context  # type: ignore[attr-defined]
        other = ended_audit(
            context, "https://hooks.example/y", tenant="globex", status=AuditStatus.QUEUED
        )
        lifecycle.cancel(context, other)  # queued -> cancelled: another tenant's own bound
        assert webhook_of(context, other)["state"] == "pending"
        with transaction(context.sessions) as session:
            delivered = session.get(Audit, uuid.UUID(states[0][0]))
            assert delivered is not None
            delivered.webhook_state = WebhookState.DELIVERED
        audit = upload(client, npz_path, callback_url="https://hooks.example/x", reuse="false")
        client.delete(f"/audits/{audit.json()['id']}")
        assert client.get(f"/audits/{audit.json()['id']}").json()["webhook"]["state"] == "pending"
        dropped = states[-1][0]
        assert webhook_of(context, uuid.UUID(dropped))["deliveries"] == []
        assert deliver(context, uuid.UUID(dropped)) is None  # never attempted
