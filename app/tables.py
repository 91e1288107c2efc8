"""Tables. Per-sample results are stored compactly: every score in one binary column, and one row
per *flagged* sample only, so paging the flagged list stays an index scan however large the
dataset."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from app.webhooks import new_secret
from dataset_audit.schemas import AuditStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[Any]: JSON}


DEFAULT_TENANT = "default"


class Tenant(Base):
    """A team whose audits only its own API keys see. Quotas left empty take the service's
    defaults (``TENANT_MAX_ACTIVE_AUDITS``, ``TENANT_MAX_STORED_BYTES``)."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    max_active_audits: Mapped[int | None] = mapped_column(Integer)
    max_stored_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Signs the tenant's webhooks. Stored as is, unlike API keys, because the worker must sign
    # with it: whoever reads this table can forge deliveries (rotate it after a leak).
    webhook_secret: Mapped[str] = mapped_column(String(64), default=new_secret)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key, stored as the SHA-256 of its text: the key itself is shown once, when made."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public; part of the key
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(200))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Audit(Base):
    __tablename__ = "audits"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant: Mapped[str] = mapped_column(
        ForeignKey("tenants.name", name="fk_audits_tenant"),
        default=DEFAULT_TENANT,
        server_default=text("'default'"),
    )
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[AuditStatus] = mapped_column(
        Enum(
            AuditStatus,
            native_enum=False,
            length=16,
            values_callable=lambda statuses: [s.value for s in statuses],
        ),
        default=AuditStatus.QUEUED,
    )
    preset: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(BigInteger)
    # The upload's image_size option; None: images of one size as they are, mixed ones 32 x 32.
    image_size: Mapped[int | None] = mapped_column(Integer)

    dataset_format: Mapped[str] = mapped_column(String(16))
    dataset_filename: Mapped[str | None] = mapped_column(String(255))
    dataset_sha256: Mapped[str] = mapped_column(String(64))
    dataset_bytes: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(512))
    n_samples: Mapped[int] = mapped_column(Integer)
    n_classes: Mapped[int] = mapped_column(Integer)
    image_shape: Mapped[list[Any]] = mapped_column()
    classes: Mapped[list[Any] | None] = mapped_column()

    progress_stage: Mapped[str | None] = mapped_column(String(32))
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    # When the broker last took the audit's task; None: it may never have (the reconciler sends).
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # this attempt
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(32))  # schemas.ErrorCode
    engine_version: Mapped[str | None] = mapped_column(String(32))
    device: Mapped[str | None] = mapped_column(String(64))
    n_flagged: Mapped[int | None] = mapped_column(Integer)
    # The cost predicted at submission (schemas.CostEstimate), beside the summary's actual one.
    estimate: Mapped[dict[str, Any] | None] = mapped_column()
    # Per-class counts, timings, learner counts: the engine's summary without per-sample arrays.
    summary: Mapped[dict[str, Any] | None] = mapped_column()
    # Where to POST the summary when the audit ends.
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    # schemas.WebhookState once the audit has ended with a callback URL; None before.
    webhook_state: Mapped[str | None] = mapped_column(String(16))

    deliveries: Mapped[list[WebhookDelivery]] = relationship(
        order_by="WebhookDelivery.attempt", passive_deletes=True
    )

    __table_args__ = (
        Index("ix_audits_tenant_created_at", "tenant", "created_at"),
        Index("ix_audits_reuse", "tenant", "dataset_sha256", "preset", "seed"),
        Index("ix_audits_status", "status"),
        Index("ix_audits_tenant_webhook_state", "tenant", "webhook_state"),
    )


class AuditPart(Base):
    """A share of an audit that any worker may run on its own: one bag's clustering, or the
    trigger-group probe (``AUDIT_PARALLEL_BAGS``). When the last part is done, one worker merges
    their results (app/parts.py)."""

    __tablename__ = "audit_parts"

    audit_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True
    )
    part: Mapped[str] = mapped_column(String(16), primary_key=True)  # "bag-0", ..., "probe"
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued, running, done
    worker: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the broker last took the part's task; None: the reconciler sends it.
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_audit_parts_status", "status"),)


class AuditScores(Base):
    """Every sample's score as little-endian float32 bytes (4 MB for a million samples)."""

    __tablename__ = "audit_scores"

    audit_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True
    )
    scores: Mapped[bytes] = mapped_column(LargeBinary)


class FlaggedSample(Base):
    __tablename__ = "flagged_samples"

    audit_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Dense positions among the audit's flagged samples, for paging by index range:
    # ``ordinal`` in dataset order, ``rank`` in the engine's most-suspicious order (0 = most
    # suspicious), and both again among the flagged samples of the same kind.
    ordinal: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16), server_default=text("'label_issue'"))
    kind_ordinal: Mapped[int] = mapped_column(Integer)
    kind_rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    label: Mapped[int] = mapped_column(BigInteger)
    voted_label: Mapped[int | None] = mapped_column(BigInteger)
    label_prob: Mapped[float] = mapped_column(Float)
    path: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_flagged_samples_ordinal", "audit_id", "ordinal", unique=True),
        Index("ix_flagged_samples_rank", "audit_id", "rank", unique=True),
        Index("ix_flagged_samples_kind_ordinal", "audit_id", "kind", "kind_ordinal", unique=True),
        Index("ix_flagged_samples_kind_rank", "audit_id", "kind", "kind_rank", unique=True),
    )


class WebhookDelivery(Base):
    """One attempt to deliver an audit's end to its ``callback_url``."""

    __tablename__ = "webhook_deliveries"

    audit_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1, 2, ...
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Whether it delivered, and nothing of what the peer said: the worker's log has that.
    delivered: Mapped[bool] = mapped_column(default=False)
