"""The API on a real database: SQLite (the embedded default) and PostgreSQL, each test on empty
tables. Uploads travel over HTTP through the ASGI test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.context import Context
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from tests.conftest import empty_tables
from tests.dataset_files import write_npz


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    # Audits as one task each: these tests play the worker with ``lifecycle.claim``. Audits in
    # parts (the default) are tests/worker/test_parts.py's and the end-to-end tests'.
    if request.param == "sqlite":
        settings = Settings(data_dir=tmp_path / "data", audit_parallel_bags=False)
        upgrade(settings.resolved_database_url)
        return settings
    database_url: str = request.getfixturevalue("postgres_url")
    empty_tables(database_url)
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url=request.getfixturevalue("unread_redis_url"),
        audit_parallel_bags=False,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def npz_path(tmp_path: Path, small_fashion: tuple[np.ndarray, np.ndarray]) -> Path:
    images, labels = small_fashion
    path = tmp_path / "fashion.npz"
    write_npz(path, images, labels)
    return path


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth": True, "auth_cache_s": 0.0})


@pytest.fixture
def api(auth_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(auth_settings)) as client:
        yield client


@pytest.fixture
def webhook_context(settings: Settings) -> Iterator[Context]:
    """A worker's context on the test's database, for webhook deliveries: short attempts, two
    of them."""
    context = Context.from_settings(
        settings.model_copy(update={"webhook_timeout_s": 3.0, "webhook_max_attempts": 2})
    )
    yield context
    context.close()
