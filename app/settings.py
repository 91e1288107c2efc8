"""One settings object, read from the environment (and a ``.env`` file).

Every URL defaults to a file under ``DATA_DIR``, so the embedded default needs no server:
SQLite for the database, kombu's SQLAlchemy transport (another SQLite file) for the broker, and a
local folder for stored uploads. Setting ``DATABASE_URL`` and ``BROKER_URL`` switches to PostgreSQL
and Redis; ``STORAGE_URL`` to any fsspec URL (``s3://bucket/prefix``) shared by API and workers.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.formats import Limits


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "dataset-audit"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    broker_url: str | None = None
    storage_url: str | None = None

    max_upload_bytes: int = 8 * 2**30
    # Requests with more header bytes than this are refused with 431.
    max_header_bytes: int = 32 * 2**10
    max_samples: int = 5_000_000
    max_image_side: int = 4096
    default_preset: str = "fast"
    # Database work the API runs at once; more requests wait their turn in the event loop.
    api_db_threads: int = 8
    # The worker writes progress to the database at most this often (seconds).
    progress_interval_s: float = 2.0
    # Access: with ``auth`` on, every request but the health probes needs an API key
    # (``dataset-audit keys create``); off, everything belongs to the tenant "default". A verified
    # key is remembered this long, so a revoked key stops working within it.
    auth: bool = False
    auth_cache_s: float = 5.0
    # Per-tenant quotas, unless the tenant has its own (``dataset-audit tenants set``).
    tenant_max_active_audits: int = 20
    tenant_max_stored_bytes: int = 100 * 2**30
    # A running audit's worker writes a heartbeat this often; one silent for
    # ``heartbeat_timeout_s`` is taken as lost and queued again, up to ``max_attempts`` starts.
    heartbeat_interval_s: float = 15.0
    heartbeat_timeout_s: float = 120.0
    max_attempts: int = 3
    # One attempt at an audit ends, failed, after this long.
    audit_time_limit_s: float = 24 * 3600.0
    # How often the API's reconciler looks for lost audits and a broker that lost its tasks
    # (0: never).
    reconcile_interval_s: float = 30.0
    # The device the worker's engine runs on: "auto" picks CUDA when present.
    worker_device: str = "auto"
    # Webhooks: deliveries are signed with this secret (HMAC-SHA256) and retried with doubling
    # delays from ``webhook_retry_base_s`` until one succeeds or ``webhook_max_attempts`` failed.
    webhook_secret: str | None = None
    webhook_max_attempts: int = 6
    webhook_retry_base_s: float = 10.0
    webhook_timeout_s: float = 10.0
    # Redis redelivers an unacknowledged task after this long; it must outlast the longest audit
    # (``audit_time_limit_s``). Lost tasks are re-sent sooner by the reconciler.
    broker_visibility_timeout_s: int = 48 * 3600

    @property
    def dataset_limits(self) -> Limits:
        return Limits(max_samples=self.max_samples, max_image_side=self.max_image_side)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'audits.sqlite'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.sqlite'}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or str(self.data_dir / "storage")


@lru_cache
def get_settings() -> Settings:
    return Settings()
