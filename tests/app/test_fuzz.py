"""The API against its own OpenAPI schema: schemathesis generates requests for every operation,
valid ones and (negative mode) invalid ones, and checks that none gets a server error and that
every response is one the schema documents (status code, content type, headers, body).

In-process over ASGI on SQLite. The database holds audits in each state the result endpoints tell
apart (succeeded with flagged samples, failed, queued, cancelled), and valid cases are pointed at
them part of the time, so the result endpoints answer with real results and 409s, not only 404s;
a share of the valid uploads carry a real dataset, so uploads are accepted too (202, or 200 for a
reused audit), not only refused.

Auth is on, as deployed, and requests carry a valid key (negative cases may still drop or spoil
the header: a 401 is documented).

Reproducible: Hypothesis is derandomized and keeps no example database. ``FUZZ_CASES`` sets how
many requests to make (default 1200: about 20 s of requests on a 2-core machine, after 10 s of
setup).
"""

from __future__ import annotations

import math
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.core.result import Err, Ok
from schemathesis.python import asgi

from app.context import Context
from app.db import make_engine, make_sessionmaker, transaction
from app.main import create_app
from app.migrate import upgrade
from app.services import access
from app.settings import Settings
from dataset_audit.schemas import AuditStatus
from tests.dataset_files import write_npz
from tests.worker.running import run_to_the_end

CASES = int(os.environ.get("FUZZ_CASES", "1200"))
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
# No 5xx, and a status code, content type, headers and body that the operation documents.
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]
Session = asgi.ASGIClient
Operation = APIOperation[Any, Any, Any, Any]


@dataclass
class Seeded:
    """What valid cases are pointed at, part of the time, instead of their generated values."""

    audits: dict[AuditStatus, str]  # an audit's id in each state
    pictured: list[int]  # samples of the succeeded audit that have a thumbnail
    dataset: bytes  # a real .npz
    upload: Callable[[], str]  # uploads the dataset: a new queued audit's id
    cancelled: list[str] = field(default_factory=list)  # cancelled by DELETE cases

    def deletable(self) -> str:
        """An audit for a DELETE case: a new one is cancelled (200), and deleted (204) by a
        later case, so each upload serves two."""
        return self.cancelled.pop() if self.cancelled else self.upload()


def upload(session: Session, dataset: bytes, **fields: str) -> str:
    response = session.post(
        "/audits", files={"file": ("d.npz", dataset)}, data={"reuse": "false", **fields}
    )
    assert response.status_code == 202, response.text
    audit_id: str = response.json()["id"]
    return audit_id


def npz_bytes(folder: Path, images: np.ndarray, labels: np.ndarray) -> bytes:
    path = folder / f"{uuid.uuid4().hex}.npz"
    write_npz(path, images, labels)
    return path.read_bytes()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # DELETE cases each upload a fresh queued audit, more than the default quota of active audits
    # at high FUZZ_CASES; quotas are tested in test_access.py.
    settings = Settings(
        data_dir=tmp_path / "data", progress_interval_s=0.0, worker_device="cpu", auth=True,
        tenant_max_active_audits=1_000_000,
    )  # fmt: skip
    upgrade(settings.resolved_database_url)
    return settings


@pytest.fixture
def api_key(settings: Settings) -> str:
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        key = access.create_key(db, "fuzz")[1]
    engine.dispose()
    return key


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    app = create_app(settings)
    yield app
    # The first request through schemathesis's ASGI client started the app's lifespan, which
    # lasts until stopped.
    asgi.shutdown_lifespans()


@pytest.fixture
def session(app: FastAPI, api_key: str) -> Iterator[Session]:
    # FastAPI's own ASGI signature is looser than schemathesis's, and fits it.
    with asgi.get_client(app) as session:  # type: ignore[arg-type]
        session.headers["Authorization"] = f"Bearer {api_key}"
        yield session


@pytest.fixture
def seeded(
    settings: Settings,
    session: Session,
    tmp_path: Path,
    small_fashion: tuple[np.ndarray, np.ndarray],
) -> Seeded:
    """Audits run to their end by the worker's own runner: the real engine on real images."""
    images, labels = small_fashion
    dataset = npz_bytes(tmp_path, images, labels)
    succeeded = upload(session, dataset, preset="tiny")
    failed = upload(session, npz_bytes(tmp_path, images[:40], labels[:40]), preset="tiny")
    context = Context.from_settings(settings)
    try:
        assert run_to_the_end(context, uuid.UUID(succeeded)) == AuditStatus.SUCCEEDED
        assert run_to_the_end(context, uuid.UUID(failed)) == AuditStatus.FAILED  # too few samples
    finally:
        context.close()
    assert session.get(f"/audits/{succeeded}").json()["summary"]["n_flagged"] > 0
    cancelled = upload(session, dataset)
    assert session.delete(f"/audits/{cancelled}").status_code == 200
    thumbs = settings.data_dir / "storage" / "audits" / succeeded / "thumbs"
    return Seeded(
        audits={
            AuditStatus.SUCCEEDED: succeeded,
            AuditStatus.FAILED: failed,
            AuditStatus.QUEUED: upload(session, dataset),
            AuditStatus.CANCELLED: cancelled,
        },
        pictured=sorted(int(path.stem) for path in thumbs.glob("*.png")),
        dataset=dataset,
        upload=lambda: upload(session, dataset),
    )


def retarget(case: Case[Operation], seeded: Seeded, data: st.DataObject) -> None:
    """Point a valid case at a seeded audit, a pictured sample or a real dataset, or leave it as
    generated (a random id: 404; random bytes: 422)."""
    parameters = case.path_parameters
    if case.method == "DELETE":
        if data.draw(st.booleans(), label="existing audit"):
            parameters["audit_id"] = seeded.deletable()
    elif "audit_id" in parameters:
        succeeded = seeded.audits[AuditStatus.SUCCEEDED]
        audit_id = data.draw(st.sampled_from([None, succeeded, *seeded.audits.values()]))
        parameters["audit_id"] = audit_id or parameters["audit_id"]
        pictured = "index" in parameters and audit_id == succeeded and bool(seeded.pictured)
        if pictured and data.draw(st.booleans(), label="pictured sample"):
            parameters["index"] = data.draw(st.sampled_from(seeded.pictured), label="index")
    elif (
        isinstance(case.body, dict)
        and "file" in case.body
        and data.draw(st.booleans(), label="real dataset")
    ):
        case.body["file"] = seeded.dataset  # type: ignore[assignment]  # a file part: bytes


def fuzz_operation(
    operation: Operation,
    mode: GenerationMode,
    max_examples: int,
    session: Session,
    seeded: Seeded,
    statuses: Counter[int],
) -> None:
    """Up to ``max_examples`` cases of the operation; raises on the first failure, shrunk."""

    @hypothesis_settings(
        max_examples=max_examples,
        derandomize=True,  # the same cases on every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def fuzz(case: Case[Operation], data: st.DataObject) -> None:
        if mode.is_positive:
            retarget(case, seeded, data)
        try:
            response = case.call(session=session)
        except Exception as exc:
            # In-process, what the app raised reaches the caller: a 500 over HTTP.
            raise AssertionError(f"{exc!r}, a server error, on: {case.as_curl_command()}") from exc
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)
        if case.method == "DELETE" and response.status_code == 200:
            seeded.cancelled.append(case.path_parameters["audit_id"])

    fuzz()


def has_inputs(operation: Operation) -> bool:
    """Whether the operation takes anything that negative mode could make invalid."""
    inputs = (operation.path_parameters, operation.query, operation.headers, operation.body)
    return any(len(parameters) for parameters in inputs)


def valid(result: Ok[Operation] | Err[schemathesis.errors.InvalidSchema]) -> Operation:
    if isinstance(result, Err):
        raise result.err()  # the schema itself is broken
    return result.ok()


def test_the_api_conforms_to_its_schema(app: FastAPI, session: Session, seeded: Seeded) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [valid(result) for result in schema.get_all_operations()]
    streams = [(op, mode) for op in operations for mode in (MODES if has_inputs(op) else MODES[:1])]
    # An operation without inputs has one request to make; the others share the rest.
    fixed = sum(not has_inputs(op) for op in operations)
    max_examples = math.ceil((CASES - fixed) / (len(streams) - fixed))
    counts: dict[str, Counter[int]] = {}
    failures: list[str] = []
    for operation, mode in streams:
        label = f"{operation.label} ({mode})"
        counts[label] = Counter()
        try:
            fuzz_operation(operation, mode, max_examples, session, seeded, counts[label])
        except (Exception, schemathesis.errors.FailureGroup) as exc:  # the others still run
            failures.append(f"{label}:\n{exc}")
    for label, statuses in counts.items():
        print(f"{label:<58} {statuses.total():>5}  {dict(sorted(statuses.items()))}")
    total = sum(statuses.total() for statuses in counts.values())
    print(f"{total} requests, {len(failures)} failing operations")
    assert not failures, "\n\n".join(failures)
    assert total >= CASES, f"only {total} requests were made of the {CASES} asked for"
