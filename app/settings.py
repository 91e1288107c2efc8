"""One settings object, read from the environment (and a ``.env`` file).

Every URL defaults to a file under ``DATA_DIR``, so the embedded default needs no server:
SQLite for the database, kombu's SQLAlchemy transport (another SQLite file) for the broker, and a
local folder for stored uploads. Setting ``DATABASE_URL`` and ``BROKER_URL`` switches to PostgreSQL
and Redis; ``STORAGE_URL`` to object storage (``s3://bucket/prefix``, which needs s3fs: the
images carry it, ``pip install 'dataset-audit[s3]'`` elsewhere) shared by API and workers.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.callback_urls import IPNetwork, parse_networks
from app.formats import Limits
from incompat.config import DEFAULT_PRESET, PresetName


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "dataset-audit"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    broker_url: str | None = None
    storage_url: str | None = None
    # Object storage (``STORAGE_URL=s3://bucket/prefix``, with the s3 extra): an S3-compatible
    # server's address (MinIO, SeaweedFS; unset for AWS) and its credentials. Unset ones fall
    # back to the AWS chain (AWS_ACCESS_KEY_ID ..., ~/.aws, an instance role).
    storage_endpoint_url: str | None = None
    storage_key: str | None = None
    storage_secret: SecretStr | None = None
    storage_region: str | None = None
    # A worker keeps the datasets it downloaded from object storage under ``data_dir/cache``, up
    # to this many bytes, so that the bags of one audit do not each download it again.
    storage_cache_bytes: int = Field(default=20 * 2**30, ge=0)

    max_upload_bytes: int = Field(default=8 * 2**30, gt=0)
    # Requests with more header bytes than this are refused with 431.
    max_header_bytes: int = Field(default=32 * 2**10, ge=1024)
    # The HTTP server's limits before a request reaches the app (app/http_limits.py): a request's
    # line and headers must arrive within ``http_header_timeout_s`` (from the connection, or from
    # the first byte of a keep-alive connection's next request); an idle keep-alive connection is
    # closed after ``http_keep_alive_s``; with ``http_max_connections`` open, requests get 503.
    http_header_timeout_s: float = Field(default=10.0, gt=0)
    http_keep_alive_s: int = Field(default=5, ge=1)
    http_max_connections: int = Field(default=1000, ge=1)
    max_samples: int = Field(default=5_000_000, gt=0)
    max_image_side: int = Field(default=4096, gt=0)
    # Width x height of one image, checked from its header before it is decoded.
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    default_preset: PresetName = DEFAULT_PRESET
    # Database work the API runs at once; more requests wait their turn in the event loop.
    api_db_threads: int = Field(default=8, ge=1)
    # The worker writes progress to the database at most this often (seconds).
    progress_interval_s: float = Field(default=2.0, ge=0)
    # Access: with ``auth`` on, every request but the health probes needs an API key
    # (``dataset-audit keys create``); off, everything belongs to the tenant "default". A verified
    # key is remembered this long, so a revoked key stops working within it.
    auth: bool = False
    auth_cache_s: float = Field(default=5.0, ge=0)
    # Per-tenant quotas, unless the tenant has its own (``dataset-audit tenants set``).
    tenant_max_active_audits: int = Field(default=20, ge=0)
    tenant_max_stored_bytes: int = Field(default=100 * 2**30, ge=0)
    # A running audit's worker writes a heartbeat this often; one silent for
    # ``heartbeat_timeout_s`` is taken as lost and queued again, up to ``max_attempts`` starts.
    heartbeat_interval_s: float = Field(default=15.0, gt=0)
    heartbeat_timeout_s: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    # One attempt at an audit ends, failed, after this long.
    audit_time_limit_s: float = Field(default=24 * 3600.0, gt=0)
    # How often the API's reconciler looks for lost audits and a broker that lost its tasks
    # (0: never).
    reconcile_interval_s: float = Field(default=30.0, ge=0)
    # Each of an audit's bags (and its trigger-group probe) is a task of its own, so several
    # workers share one audit; false runs an audit as one task on one worker.
    audit_parallel_bags: bool = True
    # The device the worker's engine runs on: "auto" picks CUDA when present.
    worker_device: str = Field(default="auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    # Webhooks: each delivery is signed with its tenant's secret (``dataset-audit tenants set``)
    # and retried with doubling delays from ``webhook_retry_base_s`` until one succeeds or
    # ``webhook_max_attempts`` failed. ``webhook_timeout_s`` bounds a whole attempt (name lookup,
    # connection, request, answer), not each read. A tenant has at most
    # ``webhook_max_outstanding`` deliveries pending; more are dropped. Webhooks go to public
    # addresses only, and to these networks (comma-separated CIDRs, e.g. "10.1.0.0/16").
    webhook_max_attempts: int = Field(default=6, ge=1)
    webhook_retry_base_s: float = Field(default=10.0, ge=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_max_outstanding: int = Field(default=20, ge=1)
    webhook_allowed_networks: str = ""

    @field_validator(
        "storage_endpoint_url", "storage_key", "storage_secret", "storage_region", mode="before"
    )
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        # Compose passes an unset variable on as "" (``${STORAGE_KEY:-}``): it means "not set".
        return None if value == "" else value

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @property
    def webhook_networks(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.webhook_allowed_networks)

    # Redis redelivers an unacknowledged task after this long; it must outlast the longest audit
    # (``audit_time_limit_s``). Lost tasks are re-sent sooner by the reconciler.
    broker_visibility_timeout_s: int = Field(default=48 * 3600, gt=0)
    # "json": the API and the workers log one JSON object per line (for a log shipper) instead
    # of uvicorn's and Celery's text.
    log_format: Literal["text", "json"] = "text"

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """The rules between settings, refused at start rather than found out in production."""
        if self.heartbeat_timeout_s < 2 * self.heartbeat_interval_s:
            raise ValueError(
                f"HEARTBEAT_TIMEOUT_S ({self.heartbeat_timeout_s:g}) must be at least twice "
                f"HEARTBEAT_INTERVAL_S ({self.heartbeat_interval_s:g}): one late beat would "
                "otherwise re-queue a running audit"
            )
        if self.broker_visibility_timeout_s <= self.audit_time_limit_s:
            raise ValueError(
                f"BROKER_VISIBILITY_TIMEOUT_S ({self.broker_visibility_timeout_s}) must outlast "
                f"AUDIT_TIME_LIMIT_S ({self.audit_time_limit_s:g}): Redis would otherwise hand "
                "a running audit to a second worker"
            )
        return self

    @property
    def dataset_limits(self) -> Limits:
        return Limits(
            max_samples=self.max_samples,
            max_image_side=self.max_image_side,
            max_image_pixels=self.max_image_pixels,
        )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'audits.sqlite'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.sqlite'}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or str(self.data_dir / "storage")

    @property
    def storage_options(self) -> dict[str, Any]:
        """s3fs's arguments for an ``s3://`` storage URL, from the settings that are set."""
        if not self.resolved_storage_url.startswith(("s3://", "s3a://")):
            return {}
        client = {"endpoint_url": self.storage_endpoint_url, "region_name": self.storage_region}
        secret = self.storage_secret.get_secret_value() if self.storage_secret else None
        options: dict[str, Any] = {
            "key": self.storage_key,
            "secret": secret,
            "client_kwargs": {name: value for name, value in client.items() if value},
        }
        return {name: value for name, value in options.items() if value}

    @property
    def storage_cache_dir(self) -> Path:
        return self.data_dir / "cache"


@lru_cache
def get_settings() -> Settings:
    return Settings()
