"""The outside probe's medium and low findings, each answered, on SQLite and PostgreSQL: formula
cells in the CSV, shared caching of thumbnails, Basic credentials on requests that change
things, the byte quota before the body is read, malformed keys, control characters in names,
and another tenant's audit timed apart from a missing one."""

from __future__ import annotations

import base64
import csv
import io
import uuid
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import event

from app import lifecycle
from app.outcome import Outcome
from app.settings import Settings
from tests.app.test_access import bearer, make_key, set_quota
from tests.app.test_api import TEST_WORKER, context_of


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"anyone:{key}".encode()).decode()}


def post_npz(api: TestClient, path: Path, headers: dict[str, str], **fields: str):
    with path.open("rb") as file:
        return api.post(
            "/audits",
            files={"file": (path.name, file, "application/octet-stream")},
            data=fields,
            headers=headers,
        )


def test_a_path_that_starts_a_formula_is_escaped_in_the_csv(
    api: TestClient, auth_settings: Settings, npz_path: Path
) -> None:
    key = make_key(auth_settings, "acme")
    audit_id = uuid.UUID(post_npz(api, npz_path, bearer(key)).json()["id"])
    paths = [f"{i}.png" for i in range(600)]
    paths[:6] = ["=HYPERLINK(\"http://x\")/0.png", "+1/1.png", "-1/2.png", "@SUM/3.png",
                 "\tx/4.png", "\rx/5.png"]  # fmt: skip
    scores = np.zeros(600, np.float32)
    scores[:7] = 0.9
    labels = np.arange(600) % 10
    outcome = Outcome(
        scores=scores, is_flagged=scores >= 0.5, labels=labels, voted_label=(labels + 1) % 10,
        label_prob=1 - scores, suspicion_order=np.argsort(-scores, kind="stable"),
        is_suspected_poison=np.zeros(600, bool), paths=paths, summary={"classes": []},
        engine_version="test", device="cpu",
    )  # fmt: skip
    context = context_of(api)
    lifecycle.claim(context, audit_id, worker=TEST_WORKER)
    assert lifecycle.succeed(context, audit_id, worker=TEST_WORKER, outcome=outcome)

    response = api.get(f"/audits/{audit_id}/flagged.csv", headers=bearer(key))
    assert response.status_code == 200
    cells = {row["index"]: row["path"] for row in csv.DictReader(io.StringIO(response.text))}
    assert cells["0"] == '\'=HYPERLINK("http://x")/0.png'
    assert [cells[str(i)][:2] for i in range(1, 6)] == ["'+", "'-", "'@", "'\t", "'\r"]
    assert cells["6"] == "6.png"  # an ordinary path is left as it is


def test_thumbnails_are_cached_by_the_browser_only(
    api: TestClient, auth_settings: Settings, npz_path: Path
) -> None:
    key = make_key(auth_settings, "acme")
    audit_id = post_npz(api, npz_path, bearer(key)).json()["id"]
    context = context_of(api)
    context.storage.put_bytes(b"\x89PNG fake", f"audits/{audit_id}/thumbs/3.png")
    response = api.get(f"/audits/{audit_id}/samples/3.png", headers=bearer(key))
    assert response.status_code == 200
    cache = response.headers["cache-control"]
    assert "private" in cache
    assert "public" not in cache


def test_basic_credentials_only_read(
    api: TestClient, auth_settings: Settings, npz_path: Path
) -> None:
    """A browser sends remembered Basic credentials with a form another site posts: so Basic
    reads pages and results, and never uploads or deletes."""
    key = make_key(auth_settings, "acme")
    refused = post_npz(api, npz_path, basic(key))
    assert refused.status_code == 401
    assert "Basic is accepted only for reading" in refused.json()["detail"]
    assert api.get("/audits", headers=bearer(key)).json()["total"] == 0

    audit_id = post_npz(api, npz_path, bearer(key)).json()["id"]
    assert api.get(f"/audits/{audit_id}", headers=basic(key)).status_code == 200
    assert api.delete(f"/audits/{audit_id}", headers=basic(key)).status_code == 401
    assert api.get(f"/audits/{audit_id}", headers=bearer(key)).json()["status"] == "queued"


def test_an_upload_over_the_byte_quota_is_refused_before_its_body_is_read(
    api: TestClient, auth_settings: Settings
) -> None:
    key = make_key(auth_settings, "acme")
    set_quota(auth_settings, "acme", max_stored_bytes=1_000_000)
    read = 0

    def body():
        nonlocal read
        for _ in range(100):
            read += 1
            yield b"x" * 65536

    headers = {
        **bearer(key),
        "Content-Type": "multipart/form-data; boundary=b",
        "Content-Length": str(100 * 65536),
    }
    response = api.post("/audits", content=body(), headers=headers)
    assert response.status_code == 429
    assert "over its limit" in response.json()["detail"]
    assert read <= 1  # refused on the declared length, not after spooling 6.5 MB


def test_malformed_keys_are_401_not_500(api: TestClient) -> None:
    for key in ["dak_\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00_x", "dak_ZZZZZZZZZZZZ_x",
                "dak_" + "é" * 12 + "_x", "x" * 5000]:  # fmt: skip
        # Sent as bytes: a header that is not ASCII is what a hostile client sends.
        for value in (basic(key)["Authorization"].encode(), ("Bearer " + key).encode()):
            headers = {b"Authorization": value}
            response = api.get("/audits", headers=headers)
            assert response.status_code == 401, (key[:20], response.text)


def test_control_characters_are_stripped_from_names(
    api: TestClient, auth_settings: Settings, npz_path: Path
) -> None:
    key = make_key(auth_settings, "acme")
    response = post_npz(api, npz_path, bearer(key), name="nightly\x1b[31m run\r\n\x7f2")
    assert response.status_code == 202
    assert response.json()["name"] == "nightly[31m run2"
    only_control = post_npz(api, npz_path, bearer(key), name="\x1b\x07", reuse="false")
    assert only_control.json()["name"] is None


def test_another_tenants_audit_is_looked_up_like_a_missing_one(
    api: TestClient, auth_settings: Settings, npz_path: Path
) -> None:
    """The same statements, and no row loaded: nothing in the answer or its time tells that the
    id exists."""
    owner, other = make_key(auth_settings, "acme"), make_key(auth_settings, "globex")
    audit_id = post_npz(api, npz_path, bearer(owner)).json()["id"]
    missing = str(uuid.uuid4())
    engine = context_of(api).engine
    seen: list[str] = []

    def statements(target: str) -> list[str]:
        seen.clear()
        response = api.get(f"/audits/{target}", headers=bearer(other))
        assert response.status_code == 404
        assert response.json() == {"detail": f"no audit {target}"}
        return list(seen)

    def record(_conn, _cursor, statement, *_):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        theirs, absent = statements(audit_id), statements(missing)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert theirs == absent
    lookups = [sql for sql in theirs if "FROM audits" in sql]
    assert lookups
    assert all("audits.tenant" in sql for sql in lookups)  # the tenant is in the query itself
