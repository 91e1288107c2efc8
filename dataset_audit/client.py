"""A Python client for the service: submit a dataset, wait for the audit, read its results.

with AuditClient("http://127.0.0.1:8000") as client:
    audit = client.submit("data.npz", preset="fast")
    audit = client.wait(audit.id, on_progress=print)
    flagged = client.flagged(audit.id)
"""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from dataset_audit.schemas import AuditRead, AuditStatus, DryRun, FlaggedItem, FlaggedPage, Page

DEFAULT_SERVER = "http://127.0.0.1:8000"
REUSABLE = ("queued", "running", "succeeded")
SERVER_ENV = "DATASET_AUDIT_SERVER"
API_KEY_ENV = "DATASET_AUDIT_API_KEY"


class AuditClientError(Exception):
    """The service answered with an error, or could not be reached (``status_code`` None)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AuditClient:
    def __init__(
        self,
        server: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = (server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")
        api_key = api_key or os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.server, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> AuditClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(
        self,
        path: str | os.PathLike[str],
        *,
        preset: str | None = None,
        seed: int | None = None,
        name: str | None = None,
        callback_url: str | None = None,
        reuse: bool = True,
        image_size: int | None = None,
    ) -> AuditRead:
        """Upload a dataset file (streamed from disk) and start its audit. With ``reuse``, the
        server may answer with an earlier audit of the same content, preset, seed and
        ``image_size`` (every image brought to that square size; None: the server's policy,
        images of one size as they are and mixed sizes at 32 x 32)."""
        audit, _reused = self.submit_or_reuse(
            path,
            preset=preset,
            seed=seed,
            name=name,
            callback_url=callback_url,
            reuse=reuse,
            image_size=image_size,
        )
        return audit

    def submit_or_reuse(
        self,
        path: str | os.PathLike[str],
        *,
        preset: str | None = None,
        seed: int | None = None,
        name: str | None = None,
        callback_url: str | None = None,
        reuse: bool = True,
        image_size: int | None = None,
    ) -> tuple[AuditRead, bool]:
        """``submit``, and whether the server answered with an earlier audit."""
        path = Path(path)
        fields = {
            "preset": preset,
            "seed": None if seed is None else str(seed),
            "image_size": None if image_size is None else str(image_size),
            "name": name,
            "callback_url": callback_url,
            "reuse": "true" if reuse else "false",
        }
        data = {k: v for k, v in fields.items() if v is not None}
        with path.open("rb") as file:
            response = self._request(
                "POST", "/audits", files={"file": (path.name, file)}, data=data, timeout=None
            )
        return AuditRead.model_validate(response.json()), response.status_code == 200

    def estimate(
        self,
        path: str | os.PathLike[str],
        *,
        preset: str | None = None,
        image_size: int | None = None,
    ) -> DryRun:
        """Upload a dataset file for inspection only (``dry_run``): its audit's predicted cost,
        with nothing stored or queued."""
        path = Path(path)
        fields = {"preset": preset, "image_size": None if image_size is None else str(image_size)}
        data = {k: v for k, v in fields.items() if v is not None}
        with path.open("rb") as file:
            response = self._request(
                "POST", "/audits", params={"dry_run": "true"},
                files={"file": (path.name, file)}, data=data, timeout=None,
            )  # fmt: skip
        return DryRun.model_validate(response.json())

    def get(self, audit_id: uuid.UUID | str) -> AuditRead:
        return AuditRead.model_validate(self._request("GET", f"/audits/{audit_id}").json())

    def list_audits(
        self, *, limit: int = 50, offset: int = 0, sha256: str | None = None
    ) -> Page[AuditRead]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if sha256 is not None:
            params["sha256"] = sha256
        response = self._request("GET", "/audits", params=params)
        return Page[AuditRead].model_validate(response.json())

    def find_reusable(
        self, sha256: str, *, preset: str, seed: int, image_size: int | None = None
    ) -> AuditRead | None:
        """An audit of this content with this preset, seed and image_size that has succeeded or
        still may: the newest, if any. Lets a client skip uploading what the service has audited."""
        wanted = (preset, seed, image_size)
        for audit in self.list_audits(sha256=sha256, limit=100).items:
            if (audit.preset, audit.seed, audit.image_size) == wanted and audit.status in REUSABLE:
                return audit
        return None

    def wait(
        self,
        audit_id: uuid.UUID | str,
        *,
        on_progress: Callable[[AuditRead], None] | None = None,
        poll_interval: float = 1.0,
        timeout: float | None = None,
    ) -> AuditRead:
        """Poll until the audit has finished; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            audit = self.get(audit_id)
            if on_progress is not None:
                on_progress(audit)
            if AuditStatus(audit.status).finished:
                return audit
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"audit {audit_id} is still {audit.status} after {timeout}s")
            time.sleep(poll_interval)

    def flagged_pages(
        self,
        audit_id: uuid.UUID | str,
        *,
        sort: str = "index",
        kind: str | None = None,
        page_size: int = 1000,
    ) -> Iterator[FlaggedPage]:
        offset = 0
        while True:
            params: dict[str, Any] = {"sort": sort, "limit": page_size, "offset": offset}
            if kind is not None:
                params["kind"] = kind
            response = self._request("GET", f"/audits/{audit_id}/flagged", params=params)
            page = FlaggedPage.model_validate(response.json())
            yield page
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def flagged(
        self, audit_id: uuid.UUID | str, *, sort: str = "index", kind: str | None = None
    ) -> list[FlaggedItem]:
        """Every flagged sample (of one kind, or all), all pages."""
        pages = self.flagged_pages(audit_id, sort=sort, kind=kind)
        return [item for page in pages for item in page.items]

    def scores(self, audit_id: uuid.UUID | str) -> np.ndarray:
        """Every sample's score (float32), fetched as .npy."""
        response = self._request("GET", f"/audits/{audit_id}/scores", params={"format": "npy"})
        scores: np.ndarray = np.load(io.BytesIO(response.content), allow_pickle=False)
        return scores

    def delete(self, audit_id: uuid.UUID | str) -> AuditRead | None:
        """Cancel a queued or running audit (its new state), or delete a finished one (None)."""
        response = self._request("DELETE", f"/audits/{audit_id}")
        return None if response.status_code == 204 else AuditRead.model_validate(response.json())

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise AuditClientError(f"cannot reach {self.server}: {exc}") from exc
        if response.is_error:
            raise AuditClientError(
                f"{method} {url}: {response.status_code} {_detail(response)}",
                status_code=response.status_code,
            )
        return response


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:200]
    return detail if isinstance(detail, str) else str(detail)
