"""The HTTP API on SQLite and PostgreSQL: uploads, listing, results, cancel and delete, errors."""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import lifecycle
from app.main import create_app
from app.outcome import Outcome
from app.settings import Settings
from tests.dataset_files import write_npz


def upload(client: TestClient, path: Path, **fields: Any) -> Any:
    with path.open("rb") as file:
        return client.post(
            "/audits",
            files={"file": (path.name, file, "application/octet-stream")},
            data={k: str(v) for k, v in fields.items()},
        )


def context_of(client: TestClient) -> Any:
    return client.app.state.context  # type: ignore[attr-defined]


def test_upload_creates_a_queued_audit(client: TestClient, npz_path: Path) -> None:
    response = upload(client, npz_path, preset="tiny", seed=3, name="fashion")
    assert response.status_code == 202, response.text
    audit = response.json()
    assert response.headers["location"] == f"/audits/{audit['id']}"
    assert audit["status"] == "queued"
    assert (audit["preset"], audit["seed"], audit["name"]) == ("tiny", 3, "fashion")
    dataset = audit["dataset"]
    assert dataset["sha256"] == hashlib.sha256(npz_path.read_bytes()).hexdigest()
    assert dataset["bytes"] == npz_path.stat().st_size
    assert (dataset["format"], dataset["n_samples"], dataset["n_classes"]) == ("npz", 600, 10)
    assert dataset["image_shape"] == [28, 28]
    assert audit["progress"] == {"stage": None, "done": 0, "total": 0, "percent": 0.0}

    fetched = client.get(f"/audits/{audit['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == audit
    storage = context_of(client).storage
    assert storage.exists(f"audits/{audit['id']}/dataset.npz")
    assert spool_is_empty(context_of(client).settings)


def test_defaults_apply_when_options_are_left_out(client: TestClient, npz_path: Path) -> None:
    audit = upload(client, npz_path).json()
    assert (audit["preset"], audit["seed"], audit["name"]) == ("fast", 0, None)


def test_audits_are_listed_newest_first_in_pages(client: TestClient, npz_path: Path) -> None:
    ids = [upload(client, npz_path, name=f"n{i}", reuse="false").json()["id"] for i in range(3)]
    first = client.get("/audits", params={"limit": 2}).json()
    assert (first["total"], first["limit"], first["offset"]) == (3, 2, 0)
    assert [a["id"] for a in first["items"]] == ids[::-1][:2]
    rest = client.get("/audits", params={"limit": 2, "offset": 2}).json()
    assert [a["id"] for a in rest["items"]] == ids[:1]
    assert client.get("/audits", params={"limit": 0}).status_code == 422


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("GET", "/flagged"), ("GET", "/scores"), ("DELETE", "")],
)
def test_unknown_audits_are_404(client: TestClient, method: str, suffix: str) -> None:
    response = client.request(method, f"/audits/{uuid.uuid4()}{suffix}")
    assert response.status_code == 404
    assert "no audit" in response.json()["detail"]
    assert client.request(method, f"/audits/not-a-uuid{suffix}").status_code == 422


def test_results_of_an_unfinished_audit_are_409(client: TestClient, npz_path: Path) -> None:
    audit_id = upload(client, npz_path).json()["id"]
    for suffix in ("/flagged", "/scores"):
        response = client.get(f"/audits/{audit_id}{suffix}")
        assert response.status_code == 409
        assert "queued" in response.json()["detail"]


def test_delete_cancels_a_queued_audit_then_deletes_it(client: TestClient, npz_path: Path) -> None:
    audit_id = upload(client, npz_path).json()["id"]
    cancelled = client.delete(f"/audits/{audit_id}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    assert client.get(f"/audits/{audit_id}/flagged").status_code == 409

    assert client.delete(f"/audits/{audit_id}").status_code == 204
    assert client.get(f"/audits/{audit_id}").status_code == 404
    assert not context_of(client).storage.exists(f"audits/{audit_id}")


def test_delete_asks_a_running_audit_to_stop(client: TestClient, npz_path: Path) -> None:
    audit_id = uuid.UUID(upload(client, npz_path).json()["id"])
    context = context_of(client)
    assert lifecycle.claim(context, audit_id, worker="w") is not None
    response = client.delete(f"/audits/{audit_id}")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("running", True)
    progress = lifecycle.record_progress(
        context, audit_id, worker="w", stage="clustering", done=1, total=9
    )
    assert progress == "cancel"


def test_flagged_samples_page_and_sort(client: TestClient, npz_path: Path) -> None:
    audit_id = uuid.UUID(upload(client, npz_path).json()["id"])
    scores = np.random.default_rng(0).random(600).astype(np.float32)
    flagged = np.flatnonzero(scores >= 0.5)
    finish_with_scores(context_of(client), audit_id, scores)

    by_index = client.get(f"/audits/{audit_id}/flagged", params={"limit": 1000}).json()
    assert by_index["total"] == flagged.size
    assert [item["index"] for item in by_index["items"]] == flagged.tolist()
    first = by_index["items"][0]
    assert first["score"] == pytest.approx(scores[first["index"]])
    assert first["path"] is None

    pages = []
    for offset in range(0, flagged.size, 40):
        page = client.get(
            f"/audits/{audit_id}/flagged", params={"sort": "score", "limit": 40, "offset": offset}
        ).json()
        pages += page["items"]
    assert [item["rank"] for item in pages] == list(range(flagged.size))
    ranked = [item["score"] for item in pages]
    assert ranked == sorted(ranked, reverse=True)

    audit = client.get(f"/audits/{audit_id}").json()
    assert audit["status"] == "succeeded"
    assert audit["summary"]["n_flagged"] == flagged.size
    assert audit["summary"]["flagged_fraction"] == pytest.approx(flagged.size / 600)


def test_flagged_samples_filter_by_kind(client: TestClient, npz_path: Path) -> None:
    audit_id = uuid.UUID(upload(client, npz_path).json()["id"])
    rng = np.random.default_rng(2)
    scores = rng.random(600).astype(np.float32)
    suspected = (scores >= 0.5) & (rng.random(600) < 0.3)
    finish_with_scores(context_of(client), audit_id, scores, suspected)
    url = f"/audits/{audit_id}/flagged"

    ranked = client.get(url, params={"sort": "score", "limit": 1000}).json()["items"]
    kinds = [item["kind"] for item in ranked]
    n_suspected = int(suspected.sum())
    assert kinds == ["suspected_poison"] * n_suspected + ["label_issue"] * (
        len(kinds) - n_suspected
    )

    for kind, members in (("suspected_poison", suspected), ("label_issue", ~suspected)):
        expected = np.flatnonzero(members & (scores >= 0.5))
        pages = []
        for offset in range(0, expected.size, 25):
            page = client.get(url, params={"kind": kind, "limit": 25, "offset": offset}).json()
            assert (page["total"], page["kind"]) == (expected.size, kind)
            pages += page["items"]
        assert [item["index"] for item in pages] == expected.tolist()
        assert {item["kind"] for item in pages} == {kind}
        by_score = client.get(url, params={"kind": kind, "sort": "score", "limit": 1000}).json()
        assert [item["rank"] for item in by_score["items"]] == list(range(expected.size))
    assert client.get(url, params={"kind": "poison"}).status_code == 422


def test_scores_come_as_json_or_npy(client: TestClient, npz_path: Path) -> None:
    audit_id = uuid.UUID(upload(client, npz_path).json()["id"])
    scores = np.random.default_rng(1).random(600).astype(np.float32)
    finish_with_scores(context_of(client), audit_id, scores)

    body = client.get(f"/audits/{audit_id}/scores").json()
    assert (body["n_samples"], body["threshold"]) == (600, 0.5)
    np.testing.assert_allclose(body["scores"], scores, rtol=1e-6)
    npy = client.get(f"/audits/{audit_id}/scores", params={"format": "npy"})
    assert npy.headers["content-type"] == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(npy.content), allow_pickle=False), scores)


def test_an_upload_over_the_limit_is_413(settings: Settings, npz_path: Path) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 10_000})
    with TestClient(create_app(small)) as client:
        response = upload(client, npz_path)
        assert response.status_code == 413
        assert "limit of 10000 bytes" in response.json()["detail"]
        assert client.get("/audits").json()["total"] == 0
    assert spool_is_empty(small)


def test_the_limit_holds_without_a_content_length(settings: Settings, npz_path: Path) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 10_000})
    body, content_type = multipart_body(npz_path.read_bytes())

    def chunks() -> Any:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    with TestClient(create_app(small)) as client:
        response = client.post("/audits", content=chunks(), headers={"content-type": content_type})
        assert response.status_code == 413
    assert spool_is_empty(small)


def test_malformed_files_are_422_and_leave_nothing(
    client: TestClient, tmp_path: Path, small_fashion: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = small_fashion
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a dataset" * 100)
    floats = tmp_path / "floats.npz"
    np.savez(floats, x=images.astype(np.float32), y=labels)
    mismatch = tmp_path / "mismatch.npz"
    np.savez(mismatch, x=images, y=labels[:-1])
    truncated = tmp_path / "truncated.npz"
    write_npz(truncated, images, labels)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    for path, words in [
        (junk, "junk.npz"),
        (floats, "float32"),
        (mismatch, "600"),
        (truncated, "truncated.npz"),
    ]:
        response = upload(client, path)
        assert response.status_code == 422, (path.name, response.text)
        assert words in response.json()["detail"], response.json()
    assert client.get("/audits").json()["total"] == 0
    assert spool_is_empty(context_of(client).settings)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"preset": "huge"}, "preset must be one of"),
        ({"seed": "-1"}, "seed"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_bad_options_are_422(
    client: TestClient, npz_path: Path, fields: dict[str, str], words: str
) -> None:
    response = upload(client, npz_path, **fields)
    assert response.status_code == 422
    assert words in response.json()["detail"]


def test_requests_without_a_file_are_refused(client: TestClient) -> None:
    assert client.post("/audits", json={"file": "x"}).status_code == 415
    response = client.post("/audits", data={"preset": "tiny"}, files={"other": ("a", b"1")})
    assert response.status_code == 422
    assert "field 'file'" in response.json()["detail"]


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readiness_reports_an_unreachable_broker(settings: Settings) -> None:
    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken)) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["broker"].startswith("unreachable")
    assert ready.json()["checks"]["database"] == "ok"


def test_openapi_documents_the_upload(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/audits"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert set(body["schema"]["properties"]) == {
        "file", "preset", "seed", "image_size", "name", "callback_url", "reuse"
    }  # fmt: skip
    assert {"/audits/{audit_id}/flagged", "/audits/{audit_id}/scores", "/readyz"} <= set(
        schema["paths"]
    )


def spool_is_empty(settings: Settings) -> bool:
    spool = settings.data_dir / "spool"
    return not spool.exists() or not list(spool.iterdir())


TEST_WORKER = "test:0:finisher"


def finish_with_scores(
    context: Any, audit_id: uuid.UUID, scores: np.ndarray, suspected: np.ndarray | None = None
) -> None:
    """Store an outcome as the worker would, from given scores (and suspected poisons, which
    rank first)."""
    labels = np.arange(scores.size) % 10
    suspected = np.zeros(scores.size, bool) if suspected is None else suspected
    outcome = Outcome(
        scores=scores,
        is_flagged=scores >= 0.5,
        labels=labels,
        voted_label=(labels + 1) % 10,
        label_prob=1 - scores,
        suspicion_order=np.lexsort((-scores, ~suspected)),
        is_suspected_poison=suspected,
        paths=None,
        summary={"classes": [], "timings": {"total": 1.0}, "n_learners": 3},
        engine_version="test",
        device="cpu",
    )
    lifecycle.claim(context, audit_id, worker=TEST_WORKER)
    assert lifecycle.succeed(context, audit_id, worker=TEST_WORKER, outcome=outcome)


def multipart_body(payload: bytes) -> tuple[bytes, str]:
    boundary = "testboundary1234"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.npz"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_datasets_over_the_sample_limit_are_422(settings: Settings, npz_path: Path) -> None:
    limited = settings.model_copy(update={"max_samples": 100})
    with TestClient(create_app(limited)) as client:
        response = upload(client, npz_path)
    assert response.status_code == 422
    assert "600 samples; at most 100" in response.json()["detail"]


def test_the_same_content_preset_and_seed_is_answered_by_the_earlier_audit(
    client: TestClient, npz_path: Path
) -> None:
    first = upload(client, npz_path, preset="tiny", seed=1)
    assert first.status_code == 202
    again = upload(client, npz_path, preset="tiny", seed=1)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == f"/audits/{first.json()['id']}"
    # Another seed, another preset, or reuse=false make a new audit.
    assert upload(client, npz_path, preset="tiny", seed=2).status_code == 202
    assert upload(client, npz_path, preset="fast", seed=1).status_code == 202
    forced = upload(client, npz_path, preset="tiny", seed=1, reuse="false")
    assert forced.status_code == 202
    assert forced.json()["id"] != first.json()["id"]
    # A cancelled audit is not reused.
    client.delete(f"/audits/{forced.json()['id']}")
    client.delete(f"/audits/{first.json()['id']}")
    assert upload(client, npz_path, preset="tiny", seed=1).status_code == 202

    sha256 = first.json()["dataset"]["sha256"]
    found = client.get("/audits", params={"sha256": sha256}).json()
    assert found["total"] == 5
    assert client.get("/audits", params={"sha256": "0" * 64}).json()["total"] == 0
    assert client.get("/audits", params={"sha256": "nothex"}).status_code == 422


def test_a_callback_url_is_kept_and_checked(client: TestClient, npz_path: Path) -> None:
    audit = upload(client, npz_path, callback_url="https://ci.example/hooks/audit").json()
    assert audit["webhook"] == {
        "url": "https://ci.example/hooks/audit",
        "state": "pending",
        "deliveries": [],
    }
    assert upload(client, npz_path, reuse="false").json()["webhook"] is None
    for bad in ("ftp://example.org/x", "not a url", "https://" + "a" * 2100):
        response = upload(client, npz_path, callback_url=bad, reuse="false")
        assert response.status_code == 422
        assert "callback_url" in response.json()["detail"]
