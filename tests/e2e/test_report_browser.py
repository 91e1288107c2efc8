"""The HTML report in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by selenium against the service as deployed (uvicorn, PostgreSQL, Redis, a Celery worker),
on one audit of the planted Fashion-MNIST backdoor (Trouser -> Sneaker)."""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from incompat.research.attacks import PoisonedDataset
from incompat.research.datasets import FASHION_MNIST_CLASSES
from tests.dataset_files import write_npz

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-quic",
]  # fmt: skip
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))
FINISH_S = 240
PAGE_S = 20
AUDIT_NAME = "browser-report"
SAMPLE_SRC = re.compile(r"/audits/(?P<id>[0-9a-f-]+)/samples/(?P<index>\d+)\.png$")
ARROW = "\N{RIGHTWARDS ARROW}"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: apt-get install -y chromium chromium-driver")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1280,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(PAGE_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def report_audit(
    service_url: str, planted_fashion: PoisonedDataset, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One finished audit of the planted dataset, with a seed no other test uses."""
    path = tmp_path_factory.mktemp("browser") / "planted.npz"
    write_npz(
        path, planted_fashion.images, planted_fashion.labels, classes=list(FASHION_MNIST_CLASSES)
    )
    with path.open("rb") as file:
        response = httpx.post(
            f"{service_url}/audits",
            files={"file": (path.name, file)},
            data={"preset": "tiny", "seed": "11", "name": AUDIT_NAME},
            timeout=60,
        )
    assert response.status_code == 202, response.text
    audit_id = response.json()["id"]
    deadline = time.monotonic() + FINISH_S
    while (audit := httpx.get(f"{service_url}/audits/{audit_id}").json())["status"] in (
        "queued", "running",
    ):  # fmt: skip
        if time.monotonic() > deadline:
            pytest.fail(f"audit still {audit['status']} after {FINISH_S} s: {audit}")
        time.sleep(0.5)
    assert audit["status"] == "succeeded", audit
    return dict(audit)


@pytest.fixture(scope="module")
def scores(service_url: str, report_audit: dict[str, Any]) -> np.ndarray:
    response = httpx.get(
        f"{service_url}/audits/{report_audit['id']}/scores", params={"format": "npy"}
    )
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content), allow_pickle=False)


def report_url(service_url: str, audit: dict[str, Any]) -> str:
    return f"{service_url}/audits/{audit['id']}/report"


def load(driver: WebDriver, url: str) -> None:
    """Opens `url` with the console log emptied first, and waits for the page to finish."""
    driver.get_log("browser")
    driver.get(url)
    WebDriverWait(driver, PAGE_S).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    # A missing favicon is the browser's own request, not the page's: it is no error of the page.
    return [
        entry
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
    ]


def wait_for_thumbnails(driver: WebDriver) -> list[WebElement]:
    """Every ``img.thumb`` brought into view (lazy loading) until it has loaded; fails on any
    that loaded without decoding."""
    pending = """
        const pending = [...document.querySelectorAll('img.thumb')].filter(img => !img.complete);
        pending.forEach(img => img.scrollIntoView({block: 'center'}));
        return pending.length;
    """
    WebDriverWait(driver, PAGE_S).until(lambda d: d.execute_script(pending) == 0)
    driver.execute_script("window.scrollTo(0, 0)")
    thumbs = driver.find_elements(By.CSS_SELECTOR, "img.thumb")
    broken = [
        thumb.get_attribute("src")
        for thumb in thumbs
        if not driver.execute_script("return arguments[0].naturalWidth", thumb)
    ]
    assert not broken, f"thumbnails that did not decode: {broken}"
    return thumbs


def sample_index(audit_id: str, thumb: WebElement) -> int:
    src = thumb.get_attribute("src") or ""
    match = SAMPLE_SRC.search(urlsplit(src).path)
    assert match, f"thumbnail not served from /audits/{audit_id}/samples/{{index}}.png: {src}"
    assert match["id"] == audit_id, src
    return int(match["index"])


def caption(driver: WebDriver, thumb: WebElement) -> str:
    text = driver.execute_script(
        "const img = arguments[0];return (img.closest('figure') || img.parentElement).textContent;",
        thumb,
    )
    return str(text)


def test_the_report_shows_the_planted_backdoor(
    browser: WebDriver, service_url: str, report_audit: dict[str, Any], scores: np.ndarray
) -> None:
    audit_id = report_audit["id"]
    browser.set_window_size(1280, 1000)
    load(browser, report_url(service_url, report_audit))
    assert console_errors(browser) == []
    heading = browser.find_element(By.TAG_NAME, "h1").text
    assert any(
        mention in text for mention in (AUDIT_NAME, audit_id) for text in (browser.title, heading)
    ), (browser.title, heading)
    # A finished audit's report stands still.
    assert browser.find_elements(By.CSS_SELECTOR, "meta[http-equiv='refresh' i]") == []

    thumbs = wait_for_thumbnails(browser)
    suspicious = browser.find_elements(By.CSS_SELECTOR, "#suspicious img.thumb")
    clean = browser.find_elements(By.CSS_SELECTOR, "#clean img.thumb")
    assert suspicious, "no thumbnails in section#suspicious"
    assert clean, "no thumbnails in section#clean"
    assert all(thumb.get_attribute("alt") for thumb in thumbs), "a thumbnail without alt text"
    shown = [sample_index(audit_id, thumb) for thumb in suspicious]
    for index, thumb in zip(shown, suspicious, strict=True):
        assert f"#{index}" in caption(browser, thumb)
    # The most suspicious, in the API's order: suspected poisons first, then by score.
    ranked = httpx.get(
        f"{service_url}/audits/{audit_id}/flagged", params={"sort": "score", "limit": len(shown)}
    ).json()["items"]
    assert shown == [item["index"] for item in ranked]
    for thumb in clean:
        if SAMPLE_SRC.search(urlsplit(thumb.get_attribute("src") or "").path):
            assert scores[sample_index(audit_id, thumb)] < 0.5, "a flagged sample shown as clean"
    png = httpx.get(suspicious[0].get_attribute("src") or "")
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert "cache-control" in png.headers

    rows = [
        row
        for row in browser.find_elements(By.CSS_SELECTOR, "#classes tr")
        if row.find_elements(By.TAG_NAME, "td")
    ]
    assert len(rows) == len(FASHION_MNIST_CLASSES), [row.text for row in rows]
    table = browser.find_element(By.ID, "classes").text
    assert all(name in table for name in FASHION_MNIST_CLASSES), table
    attack = f"Trouser {ARROW} Sneaker"
    attacked = [row for row in rows if attack in row.text]
    assert len(attacked) == 1, table
    cells = [cell.text for cell in attacked[0].find_elements(By.CSS_SELECTOR, "th, td")]
    assert any(attack in cell for cell in cells), cells
    assert any("Sneaker" in cell for cell in cells if attack not in cell), cells  # the row's class

    histogram = browser.find_element(By.CSS_SELECTOR, "svg#histogram")
    assert histogram.get_attribute("role") == "img"
    assert (histogram.get_attribute("aria-label") or "").strip()
    assert histogram.is_displayed()
    assert histogram.size["width"] > 0
    assert histogram.size["height"] > 0

    links = [a.get_attribute("href") or "" for a in browser.find_elements(By.CSS_SELECTOR, "a")]
    base = f"{service_url}/audits/{audit_id}"
    for download in (f"{base}/flagged.csv", f"{base}/scores?format=npy"):
        assert download in links, f"no link to {download}"
        assert httpx.get(download).status_code == 200, download

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "report.png"))
    assert console_errors(browser) == []


def test_the_list_links_to_the_report(
    browser: WebDriver, service_url: str, report_audit: dict[str, Any]
) -> None:
    audit_id = report_audit["id"]
    browser.set_window_size(1280, 1000)
    load(browser, f"{service_url}/")
    assert console_errors(browser) == []
    target = report_url(service_url, report_audit)
    row = next(
        (
            row
            for row in browser.find_elements(By.CSS_SELECTOR, "table#audits tr")
            if any(a.get_attribute("href") == target for a in row.find_elements(By.TAG_NAME, "a"))
        ),
        None,
    )
    assert row is not None, browser.find_element(By.ID, "audits").text
    assert "succeeded" in row.text.lower(), row.text
    link = next(a for a in row.find_elements(By.TAG_NAME, "a") if a.get_attribute("href") == target)
    assert AUDIT_NAME in link.text or audit_id in link.text, link.text
    link.click()
    WebDriverWait(browser, PAGE_S).until(lambda d: d.current_url == target)
    WebDriverWait(browser, PAGE_S).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    assert browser.find_elements(By.CSS_SELECTOR, "table#classes")
    assert console_errors(browser) == []


def test_the_report_fits_a_phone(
    browser: WebDriver, service_url: str, report_audit: dict[str, Any]
) -> None:
    browser.set_window_size(390, 844)
    try:
        load(browser, report_url(service_url, report_audit))
        wait_for_thumbnails(browser)
        width, inner = browser.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "report-phone.png"))
        assert width <= inner + 1, f"the page is {width} px wide in a {inner} px viewport"
        assert console_errors(browser) == []
    finally:
        browser.set_window_size(1280, 1000)
