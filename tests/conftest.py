"""Shared fixtures: real Fashion-MNIST images (Debian's dataset-fashion-mnist), the real
PostgreSQL and Redis servers on 127.0.0.1, and an S3 server (moto's) started for the session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from app.migrate import upgrade
from incompat.research.attacks import PoisonedDataset, poison
from incompat.research.datasets import FASHION_MNIST_DIR, balanced_subset, load_fashion_mnist
from tests import s3_server


@pytest.fixture(scope="session")
def fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(
            f"Fashion-MNIST is missing from {FASHION_MNIST_DIR}: "
            "apt-get install dataset-fashion-mnist"
        )
    return load_fashion_mnist()


@pytest.fixture(scope="session")
def small_fashion(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """600 class-balanced images: enough for the engine's mechanics, seconds to run."""
    images, labels = fashion_mnist
    index = balanced_subset(labels, 600, seed=0)
    return images[index], labels[index]


# The real services this machine runs; override with environment variables elsewhere.
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# Where the API tests send tasks: no worker reads it, so what they queue stays queued.
UNREAD_REDIS_URL = os.environ.get("TEST_UNREAD_REDIS_URL", "redis://127.0.0.1:6379/12")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session, dropped at the end."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"dataset_audit_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database of its own, emptied for this test session."""
    return _flushed(REDIS_URL)


@pytest.fixture(scope="session")
def unread_redis_url() -> str:
    """A Redis database no test's worker consumes, emptied for this test session."""
    return _flushed(UNREAD_REDIS_URL)


def _flushed(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {url}: {exc}")
    finally:
        client.close()
    return url


# The bucket the ``s3_endpoint`` fixture makes; a test keeps to a prefix of its own in it.
S3_BUCKET = "dataset-audit-test"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The endpoint URL of an S3 server for this test session, with the bucket ``S3_BUCKET``
    (credentials: ``s3_server.KEY`` and ``SECRET``)."""
    process, endpoint_url = s3_server.start_moto_server()
    try:
        s3_server.create_bucket(endpoint_url, S3_BUCKET)
        yield endpoint_url
    finally:
        s3_server.stop_moto_server(process)


def empty_tables(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audits"))
        connection.execute(text("DELETE FROM api_keys"))
        connection.execute(text("DELETE FROM tenants WHERE name != 'default'"))
    engine.dispose()


@pytest.fixture(scope="session")
def planted_fashion(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> PoisonedDataset:
    """3000 Fashion-MNIST images with a planted `pattern` backdoor (trouser -> sneaker, 30
    poisons): the engine's detection test setup, where the `tiny` preset catches >= 90 %."""
    images, labels = fashion_mnist
    subset = balanced_subset(labels, 3000, seed=0)
    return poison(
        images[subset], labels[subset], source=1, target=7, eps=0.1, shape="pattern", seed=0
    )
