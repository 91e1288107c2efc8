"""The report pages of an audit the real engine ran: what they show and what they link to."""

from __future__ import annotations

import csv
import io
import re
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.context import Context
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from incompat.research.datasets import FASHION_MNIST_CLASSES
from tests.dataset_files import write_npz
from tests.worker.running import run_to_the_end


@pytest.fixture
def client(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data", progress_interval_s=0.0, worker_device="cpu")
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings)) as client:
        yield client


def upload(client: TestClient, path: Path) -> str:
    with path.open("rb") as file:
        response = client.post(
            "/audits", files={"file": (path.name, file)}, data={"preset": "tiny", "name": "pages"}
        )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_the_report_of_a_finished_audit(client: TestClient, tmp_path: Path, small_fashion) -> None:
    path = tmp_path / "d.npz"
    images, labels = small_fashion
    write_npz(path, images, labels, classes=list(FASHION_MNIST_CLASSES))
    audit_id = upload(client, path)

    queued = client.get(f"/audits/{audit_id}/report")
    assert queued.status_code == 200
    assert '<meta http-equiv="refresh"' in queued.text
    assert "waiting for a worker" in queued.text

    context: Context = client.app.state.context  # type: ignore[attr-defined]
    run_to_the_end(context, uuid.UUID(audit_id))
    page = client.get(f"/audits/{audit_id}/report")
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "http-equiv" not in html
    assert "Audit pages" in html
    assert 'id="classes"' in html
    assert 'id="histogram"' in html
    for name in FASHION_MNIST_CLASSES:
        assert f'<th scope="row">{name.replace("/", "/")}</th>' in html
    thumbs = re.findall(r'<img class="thumb" src="([^"]+)" alt="([^"]+)"', html)
    assert thumbs
    assert all(alt.startswith("Sample ") for _, alt in thumbs)
    for src, _ in thumbs[:3]:
        png = client.get(src)
        assert png.headers["content-type"] == "image/png"
        assert "immutable" in png.headers["cache-control"]
        assert Image.open(io.BytesIO(png.content)).size == (112, 112)  # 28 x 28, enlarged 4x
    assert client.get(f"/audits/{audit_id}/samples/999999.png").status_code == 404

    audit = client.get(f"/audits/{audit_id}").json()
    # The page opens with the verdict, before the facts.
    verdict = audit["summary"]["verdict"]["status"]
    assert f'<h2 id="verdict-heading">Verdict: {verdict}</h2>' in html
    assert html.index('id="verdict"') < html.index('class="facts"')
    rows = list(csv.DictReader(io.StringIO(client.get(f"/audits/{audit_id}/flagged.csv").text)))
    assert len(rows) == audit["summary"]["n_flagged"]
    assert [int(r["rank"]) for r in rows] == list(range(len(rows)))
    kinds = [r["kind"] for r in rows]
    suspected = audit["summary"]["n_suspected_poisons"]
    assert kinds == ["suspected_poison"] * suspected + ["label_issue"] * (len(rows) - suspected)

    listing = client.get("/").text
    assert f'href="/audits/{audit_id}/report">pages</a>' in listing
    assert 'id="audits"' in listing


def test_pages_for_unknown_audits_are_404(client: TestClient) -> None:
    missing = uuid.uuid4()
    assert client.get(f"/audits/{missing}/report").status_code == 404
    assert client.get(f"/audits/{missing}/flagged.csv").status_code == 404
    assert "No audits yet" in client.get("/").text


class Accessibility(HTMLParser):
    """Collects what basic accessibility checks look at."""

    def __init__(self) -> None:
        super().__init__()
        self.lang: str | None = None
        self.images_without_alt = 0
        self.header_cells_without_scope = 0
        self.svgs_without_label = 0
        self.title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "html":
            self.lang = found.get("lang")
        elif tag == "img" and not found.get("alt"):
            self.images_without_alt += 1
        elif tag == "th" and found.get("scope") not in ("row", "col"):
            self.header_cells_without_scope += 1
        elif tag == "svg" and not (found.get("role") == "img" and found.get("aria-label")):
            self.svgs_without_label += 1
        elif tag == "title":
            self.title = True


def test_the_pages_pass_basic_accessibility_checks(
    client: TestClient, tmp_path: Path, small_fashion
) -> None:
    images, labels = small_fashion
    path = tmp_path / "d.npz"
    write_npz(path, images, labels)
    audit_id = upload(client, path)
    run_to_the_end(client.app.state.context, uuid.UUID(audit_id))  # type: ignore[attr-defined]
    for url in ("/", f"/audits/{audit_id}/report"):
        page = Accessibility()
        page.feed(client.get(url).text)
        assert page.lang == "en"
        assert page.title
        assert page.images_without_alt == 0
        assert page.header_cells_without_scope == 0
        assert page.svgs_without_label == 0
