"""Storage on object storage: a real S3 API (moto's server), through s3fs, as API and workers on
different hosts use it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from app.storage import Storage
from tests import s3_server
from tests.conftest import S3_BUCKET


def options(endpoint_url: str, **more: Any) -> dict[str, Any]:
    client = {"endpoint_url": endpoint_url, "region_name": s3_server.REGION}
    return {"key": s3_server.KEY, "secret": s3_server.SECRET, "client_kwargs": client, **more}


@pytest.fixture
def url(s3_endpoint: str) -> str:
    return f"s3://{S3_BUCKET}/{uuid.uuid4().hex}"


@pytest.fixture
def storage(s3_endpoint: str, url: str, tmp_path: Path) -> Storage:
    return Storage(url, options(s3_endpoint), cache_dir=tmp_path / "cache", cache_bytes=1000)


@pytest.fixture
def downloads(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The remote paths ``storage`` downloads from here on."""
    fetched: list[str] = []
    get_file: Callable[..., None] = storage.fs.get_file

    def counting(remote: str, local: str, **kwargs: Any) -> None:
        fetched.append(remote)
        get_file(remote, local, **kwargs)

    monkeypatch.setattr(storage.fs, "get_file", counting)
    return fetched


def another_process(s3_endpoint: str, url: str) -> Storage:
    """The same storage through a filesystem object of its own, with its own listing cache."""
    return Storage(url, options(s3_endpoint, skip_instance_cache=True))


def read(storage: Storage, key: str) -> bytes:
    with storage.local_copy(key) as path:
        return path.read_bytes()


def cached_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir())


def test_bytes_and_files(storage: Storage, tmp_path: Path) -> None:
    assert not storage.is_local
    assert storage.local_dir("audits/a") is None
    assert storage.get_bytes("audits/a/thumbs/1.png") is None
    assert not storage.exists("audits/a/thumbs/1.png")
    storage.put_bytes(b"png", "audits/a/thumbs/1.png")
    assert storage.get_bytes("audits/a/thumbs/1.png") == b"png"
    assert storage.exists("audits/a/thumbs/1.png")
    assert storage.exists("audits/a")  # a prefix, as the API's tests ask

    upload = tmp_path / "upload.npz"
    upload.write_bytes(b"dataset")
    storage.put_file(upload, "audits/a/dataset.npz")
    assert not upload.exists()
    assert storage.get_bytes("audits/a/dataset.npz") == b"dataset"


def test_listings_of_another_process_are_not_trusted(s3_endpoint: str, url: str) -> None:
    api, worker = Storage(url, options(s3_endpoint)), another_process(s3_endpoint, url)
    api.put_bytes(b"1", "audits/a/old.png")
    assert api.fs.ls(f"{api.root}/audits/a")  # s3fs keeps this listing
    worker.put_bytes(b"2", "audits/a/new.png")
    assert api.exists("audits/a/new.png")
    assert api.get_bytes("audits/a/new.png") == b"2"
    worker.delete_prefix("audits/a")
    assert not api.exists("audits/a/old.png")
    assert api.get_bytes("audits/a/old.png") is None


def test_delete_and_delete_prefix(storage: Storage) -> None:
    for key in ("audits/1/dataset.npz", "audits/1/thumbs/3.png", "audits/10/dataset.npz"):
        storage.put_bytes(b"x", key)
    storage.delete("audits/1/thumbs/3.png")
    storage.delete("audits/1/thumbs/3.png")  # gone already: nothing happens
    assert not storage.exists("audits/1/thumbs/3.png")
    assert storage.exists("audits/1/dataset.npz")

    storage.delete_prefix("audits/1")
    assert not storage.exists("audits/1/dataset.npz")
    assert not storage.exists("audits/1")
    assert storage.exists("audits/10/dataset.npz"), "a prefix is a folder, not a string prefix"
    storage.delete_prefix("audits/1")  # gone already: nothing happens
    storage.delete_prefix("audits/2")


def test_local_copy_downloads_once(storage: Storage, downloads: list[str]) -> None:
    assert storage.cache is not None
    storage.put_bytes(b"a" * 300, "audits/a/dataset.npz")
    assert read(storage, "audits/a/dataset.npz") == b"a" * 300
    with storage.local_copy("audits/a/dataset.npz") as path:
        assert path.parent == storage.cache.folder
        assert path.name.endswith("-dataset.npz")
    assert path.exists(), "the cache keeps it for the next task"
    assert len(downloads) == 1


def test_a_changed_object_is_fetched_anew(storage: Storage, downloads: list[str]) -> None:
    storage.put_bytes(b"a" * 300, "audits/a/dataset.npz")
    assert read(storage, "audits/a/dataset.npz") == b"a" * 300
    storage.put_bytes(b"b" * 300, "audits/a/dataset.npz")  # the same size: the ETag tells
    assert read(storage, "audits/a/dataset.npz") == b"b" * 300
    assert len(downloads) == 2


def test_the_least_recently_used_go_first(storage: Storage, downloads: list[str]) -> None:
    assert storage.cache is not None
    for name in "abcd":
        storage.put_bytes(name.encode() * 400, f"audits/{name}/dataset.npz")
    read(storage, "audits/a/dataset.npz")
    read(storage, "audits/b/dataset.npz")
    read(storage, "audits/a/dataset.npz")  # a is used after b
    read(storage, "audits/c/dataset.npz")  # 1200 bytes > 1000: b goes
    assert cached_bytes(storage.cache.folder) <= 1000
    assert len(downloads) == 3
    read(storage, "audits/a/dataset.npz")
    assert len(downloads) == 3
    read(storage, "audits/b/dataset.npz")
    assert len(downloads) == 4
    for name in "dcba":
        read(storage, f"audits/{name}/dataset.npz")
        assert cached_bytes(storage.cache.folder) <= 1000


def test_a_file_in_use_is_kept(storage: Storage) -> None:
    assert storage.cache is not None
    for name in "abc":
        storage.put_bytes(name.encode() * 400, f"audits/{name}/dataset.npz")
    with storage.local_copy("audits/a/dataset.npz") as path:
        read(storage, "audits/b/dataset.npz")
        read(storage, "audits/c/dataset.npz")
        assert path.read_bytes() == b"a" * 400
    read(storage, "audits/c/dataset.npz")
    assert cached_bytes(storage.cache.folder) <= 1000


def test_larger_than_the_cache_or_no_cache_is_a_temporary_copy(
    s3_endpoint: str, url: str, storage: Storage, tmp_path: Path
) -> None:
    storage.put_bytes(b"x" * 2000, "audits/a/dataset.npz")
    uncached = Storage(url, options(s3_endpoint), cache_dir=tmp_path / "none", cache_bytes=0)
    assert uncached.cache is None
    for each in (storage, uncached):
        with each.local_copy("audits/a/dataset.npz") as path:
            assert path.read_bytes() == b"x" * 2000
        assert not path.exists()
    assert storage.cache is not None
    assert not storage.cache.folder.exists()


def test_processes_fetching_one_key_at_once(storage: Storage) -> None:
    assert storage.cache is not None
    storage.put_bytes(b"z" * 500, "audits/a/dataset.npz")
    seen: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: seen.append(read(storage, "audits/a/dataset.npz")))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [b"z" * 500] * 4
    assert [p.name for p in storage.cache.folder.iterdir() if p.name.startswith(".")] == []
    assert cached_bytes(storage.cache.folder) == 500


def s3_settings(s3_endpoint: str, url: str, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        storage_url=url,
        storage_endpoint_url=s3_endpoint,
        storage_key=s3_server.KEY,
        storage_secret=s3_server.SECRET,  # type: ignore[arg-type]  # pydantic makes a SecretStr
        storage_region=s3_server.REGION,
        storage_cache_bytes=2**24,
    )


def test_from_settings(s3_endpoint: str, url: str, tmp_path: Path) -> None:
    settings = s3_settings(s3_endpoint, url, tmp_path)
    assert settings.storage_options == options(s3_endpoint)
    assert str(settings.storage_secret) == "**********", "the secret stays out of logs"
    storage = Storage.from_settings(settings)
    assert storage.cache is not None
    assert (storage.cache.folder, storage.cache.max_bytes) == (tmp_path / "cache", 2**24)
    storage.put_bytes(b"report", "audits/a/thumbs/0.png")
    assert another_process(s3_endpoint, url).get_bytes("audits/a/thumbs/0.png") == b"report"


def test_storage_settings_apply_to_s3_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(data_dir=tmp_path, storage_key="k").storage_options == {}
    # Compose hands an unset variable on as "": the AWS credential chain applies then.
    for name in ("STORAGE_ENDPOINT_URL", "STORAGE_KEY", "STORAGE_SECRET", "STORAGE_REGION"):
        monkeypatch.setenv(name, "")
    settings = Settings(data_dir=tmp_path, storage_url="s3://bucket/prefix")
    assert settings.storage_key is None
    assert settings.storage_secret is None
    assert settings.storage_options == {}


def test_the_api_stores_uploads_in_the_bucket(
    s3_endpoint: str, url: str, tmp_path: Path, npz_path: Path
) -> None:
    settings = s3_settings(s3_endpoint, url, tmp_path / "api")
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings)) as client, npz_path.open("rb") as file:
        response = client.post("/audits", files={"file": ("data.npz", file)})
        assert response.status_code == 202, response.text
    key = f"audits/{response.json()['id']}/dataset.npz"
    # A worker on another host: its own filesystem object, data folder and cache.
    worker = Storage.from_settings(s3_settings(s3_endpoint, url, tmp_path / "worker"))
    with worker.local_copy(key) as path:
        assert path.read_bytes() == npz_path.read_bytes()
        assert path.is_relative_to(tmp_path / "worker" / "cache")
