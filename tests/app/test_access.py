"""Tenants and API keys: the admin CLI, 401 without a valid key, 404 across tenants, quotas as
429; on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.cli import main
from app.db import make_engine, make_sessionmaker, transaction
from app.services import access
from app.settings import Settings, get_settings
from app.tables import ApiKey, Audit
from tests.app.test_api import context_of, finish_with_scores, upload
from tests.dataset_files import write_npz


def make_key(settings: Settings, tenant: str) -> str:
    engine = make_engine(settings.resolved_database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return access.create_key(session, tenant)[1]
    finally:
        engine.dispose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def as_tenant(api: TestClient, auth_settings: Settings):
    """A TestClient-like caller per tenant: ``as_tenant("acme").get(...)``."""

    class Caller:
        def __init__(self, tenant: str) -> None:
            self.headers = bearer(make_key(auth_settings, tenant))

        def get(self, url: str, **kwargs):
            return api.get(url, headers=self.headers, **kwargs)

        def delete(self, url: str):
            return api.delete(url, headers=self.headers)

        def upload(self, path: Path, **fields):
            with path.open("rb") as file:
                return api.post(
                    "/audits",
                    files={"file": (path.name, file, "application/octet-stream")},
                    data={k: str(v) for k, v in fields.items()},
                    headers=self.headers,
                )

    return Caller


@pytest.fixture(autouse=True)
def _fresh_settings_cache() -> Iterator[None]:
    # The CLI reads DATA_DIR/DATABASE_URL through the cached settings.
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


AUDIT_ROUTES = [
    ("GET", ""),
    ("GET", "/flagged"),
    ("GET", "/scores"),
    ("GET", "/report"),
    ("GET", "/flagged.csv"),
    ("GET", "/samples/0.png"),
    ("DELETE", ""),
]


def test_keys_are_made_listed_and_revoked_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = ["--data-dir", str(tmp_path / "data")]
    assert main(["keys", "create", "--tenant", "acme", "--name", "ci", *data_dir]) == 0
    out, err = capsys.readouterr()
    key = out.split()[-1]
    assert f"Database: {tmp_path / 'data' / 'audits.sqlite'}" in err
    assert key.startswith("dak_")
    key_id = key[4:16]

    assert main(["keys", "list", *data_dir]) == 0
    listing = capsys.readouterr().out
    assert [key_id, "acme", "ci"] == listing.splitlines()[1].split()[:3]
    assert "active" in listing
    assert key[17:] not in listing  # the secret is never shown again

    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'audits.sqlite'}")
    with make_sessionmaker(engine)() as session:
        assert access.tenant_for_key(session, key) == "acme"
        stored = session.get(ApiKey, key_id)
        assert stored is not None
        assert stored.secret_sha256 == hashlib.sha256(key.encode()).hexdigest()  # not the key
    assert main(["keys", "revoke", key_id, *data_dir]) == 0
    assert "Revoked" in capsys.readouterr().out
    with make_sessionmaker(engine)() as session:
        assert access.tenant_for_key(session, key) is None
    engine.dispose()
    assert main(["keys", "list", "--tenant", "acme", *data_dir]) == 0
    assert "revoked" in capsys.readouterr().out

    assert main(["keys", "revoke", "nosuchkey", *data_dir]) == 2
    assert "no API key 'nosuchkey'" in capsys.readouterr().err
    assert main(["keys", "create", "--tenant", "no spaces", *data_dir]) == 2
    assert "tenant name" in capsys.readouterr().err


def test_the_cli_makes_no_database_nobody_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --data-dir or DATABASE_URL, keys go to the default service's database only
    when that service exists: an empty new one would hold keys no service reads."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "nothing-here"))
    get_settings.cache_clear()
    assert main(["keys", "create", "--tenant", "acme"]) == 2
    assert "no service database at " in capsys.readouterr().err
    assert not (tmp_path / "nothing-here").exists()
    get_settings.cache_clear()


def test_the_cli_uses_database_url(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    assert main(["keys", "create", "--tenant", f"pg-{uuid.uuid4().hex[:6]}"]) == 0
    out, err = capsys.readouterr()
    key = out.split()[-1]
    assert "Database: postgresql+psycopg://" in err
    engine = make_engine(postgres_url)
    with make_sessionmaker(engine)() as session:
        assert (access.tenant_for_key(session, key) or "").startswith("pg-")
    engine.dispose()
    assert main(["tenants", "set", "acme", "--max-active-audits", "3", "--max-stored", "2G"]) == 0
    assert "at most 3 active audits and 2.0 GiB stored" in capsys.readouterr().out
    assert main(["tenants", "list"]) == 0
    assert "0/3" in capsys.readouterr().out


def test_without_a_valid_key_every_audit_route_is_401(
    api: TestClient, auth_settings: Settings, npz_path: Path
) -> None:
    audit = f"/audits/{uuid.uuid4()}"
    forged = "dak_000000000000_" + "x" * 43
    for headers in ({}, bearer("nonsense"), bearer(forged), {"Authorization": "Token abc"}):
        assert api.get("/audits", headers=headers).status_code == 401
        for method, suffix in AUDIT_ROUTES:
            assert api.request(method, audit + suffix, headers=headers).status_code == 401
        with npz_path.open("rb") as file:
            response = api.post("/audits", files={"file": file}, headers=headers)
        assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "API key" in response.json()["detail"]
    page = api.get("/")
    assert page.status_code == 401
    assert page.headers["www-authenticate"].startswith("Basic")  # the browser asks for the key
    # The probes and the API's description stay open.
    for url in ("/healthz", "/openapi.json", "/docs"):
        assert api.get(url).status_code == 200


def test_a_tenant_sees_only_its_own_audits(as_tenant, api: TestClient, npz_path: Path) -> None:
    acme, globex = as_tenant("acme"), as_tenant("globex")
    created = acme.upload(npz_path, preset="tiny")
    assert created.status_code == 202, created.text
    audit_id = created.json()["id"]
    finish_with_scores(context_of(api), uuid.UUID(audit_id), np.linspace(0, 1, 600, dtype="f4"))

    for method, suffix in AUDIT_ROUTES:
        url = f"/audits/{audit_id}{suffix}"
        response = api.request(method, url, headers=globex.headers)
        assert response.status_code == 404, (method, suffix, response.text)
    assert acme.get(f"/audits/{audit_id}").json()["status"] == "succeeded"  # not deleted
    assert acme.get(f"/audits/{audit_id}/flagged").status_code == 200
    assert acme.get(f"/audits/{audit_id}/report").status_code == 200
    assert [a["id"] for a in acme.get("/audits").json()["items"]] == [audit_id]
    assert globex.get("/audits").json()["total"] == 0
    assert audit_id not in globex.get("/").text

    # The same file from another tenant is a new audit: reuse never crosses tenants.
    again = globex.upload(npz_path, preset="tiny")
    assert again.status_code == 202
    assert again.json()["id"] != audit_id
    assert acme.upload(npz_path, preset="tiny").status_code == 200  # acme's own earlier audit


def test_pages_take_the_key_by_http_basic(as_tenant, api: TestClient) -> None:
    key = as_tenant("acme").headers["Authorization"].removeprefix("Bearer ")
    basic = base64.b64encode(f"anyone:{key}".encode()).decode()
    page = api.get("/", headers={"Authorization": f"Basic {basic}"})
    assert page.status_code == 200
    assert "<html" in page.text.lower()


def test_a_revoked_key_stops_working(
    api: TestClient, auth_settings: Settings, npz_path: Path
) -> None:
    key = make_key(auth_settings, "acme")
    assert api.get("/audits", headers=bearer(key)).status_code == 200
    engine = make_engine(auth_settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as session:
        access.revoke_key(session, key)
    engine.dispose()
    response = api.get("/audits", headers=bearer(key))
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_without_auth_everything_belongs_to_the_default_tenant(
    client: TestClient, npz_path: Path
) -> None:
    audit_id = upload(client, npz_path).json()["id"]
    with context_of(client).sessions() as session:
        assert session.get(Audit, uuid.UUID(audit_id)).tenant == "default"


def set_quota(settings: Settings, tenant: str, **quota: int) -> None:
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as session:
        access.set_quota(session, tenant, **quota)
    engine.dispose()


def test_over_the_active_audits_quota_is_429(
    as_tenant, auth_settings: Settings, npz_path: Path, tmp_path: Path
) -> None:
    acme = as_tenant("acme")
    set_quota(auth_settings, "acme", max_active_audits=1)
    first = acme.upload(npz_path)
    assert first.status_code == 202
    other = distinct_npz(tmp_path, 1)
    refused = acme.upload(other)
    assert refused.status_code == 429
    assert "1 audits queued or running, its limit" in refused.json()["detail"]
    assert as_tenant("globex").upload(other).status_code == 202  # quotas are per tenant
    assert acme.delete(f"/audits/{first.json()['id']}").status_code == 200  # cancelled
    assert acme.upload(other).status_code == 202


def test_over_the_stored_bytes_quota_is_429_until_space_is_freed(
    as_tenant, auth_settings: Settings, npz_path: Path, tmp_path: Path
) -> None:
    acme = as_tenant("acme")
    size = npz_path.stat().st_size
    set_quota(auth_settings, "acme", max_stored_bytes=int(size * 1.5))
    first = acme.upload(npz_path).json()["id"]
    refused = acme.upload(distinct_npz(tmp_path, 1))
    assert refused.status_code == 429
    assert "over its limit" in refused.json()["detail"]
    assert not any((auth_settings.data_dir / "spool").iterdir())  # nothing left behind
    assert acme.delete(f"/audits/{first}").status_code == 200  # cancel...
    assert acme.delete(f"/audits/{first}").status_code == 204  # ...then delete frees the bytes
    assert acme.upload(distinct_npz(tmp_path, 2)).status_code == 202


def test_concurrent_uploads_cannot_overrun_the_quota(
    as_tenant, auth_settings: Settings, tmp_path: Path
) -> None:
    acme = as_tenant("acme")
    set_quota(auth_settings, "acme", max_active_audits=2)
    paths = [distinct_npz(tmp_path, seed) for seed in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = sorted(r.status_code for r in pool.map(acme.upload, paths))
    assert codes == [202, 202, 429, 429, 429, 429]
    assert acme.get("/audits").json()["total"] == 2


def distinct_npz(tmp_path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path = tmp_path / f"distinct-{seed}-{os.getpid()}.npz"
    write_npz(path, rng.integers(0, 256, (600, 28, 28), dtype=np.uint8), np.arange(600) % 10)
    return path
