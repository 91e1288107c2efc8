"""Tenants, their API keys and their quotas. Functions here never commit: the caller owns the
transaction.

A key reads ``dak_<id>_<secret>``: the id (public, shown by ``keys list``) finds the row, and the
SHA-256 of the whole key must match the stored one. The secret is 256 random bits, so a fast hash
is enough; no key is ever stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.settings import Settings
from app.tables import ApiKey, Audit, Tenant, utcnow
from app.webhooks import new_secret
from dataset_audit.schemas import AuditStatus

KEY_PREFIX = "dak_"
KEY_ID_HEX = 12
_KEY_ID = re.compile(f"[0-9a-f]{{{KEY_ID_HEX}}}")
TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ACTIVE = (AuditStatus.QUEUED, AuditStatus.RUNNING)


class AccessError(ValueError):
    """A tenant or key that does not exist or cannot be made (the message says why)."""


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _key_id(key: str) -> str | None:
    if not key.startswith(KEY_PREFIX):
        return None
    key_id = key[len(KEY_PREFIX) : len(KEY_PREFIX) + KEY_ID_HEX]
    # Only a well-formed id reaches the database: a NUL byte in a key made PostgreSQL fail.
    if not _KEY_ID.fullmatch(key_id) or key[len(KEY_PREFIX) + KEY_ID_HEX :][:1] != "_":
        return None
    return key_id


def tenant_for_key(session: Session, key: str) -> str | None:
    """The tenant a valid, unrevoked key belongs to; None for any other text."""
    key_id = _key_id(key)
    if key_id is None:
        return None
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_sha256, key_digest(key)):
        return None
    return row.tenant


def ensure_tenant(session: Session, name: str) -> Tenant:
    if not TENANT_NAME.fullmatch(name):
        raise AccessError(
            f"a tenant name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit; got {name!r}"
        )
    tenant = session.get(Tenant, name)
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_key(session: Session, tenant: str, name: str | None = None) -> tuple[ApiKey, str]:
    """A new key for the tenant (made if new): its row, and the key text, shown only now."""
    ensure_tenant(session, tenant)
    key_id = secrets.token_hex(KEY_ID_HEX // 2)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    row = ApiKey(id=key_id, tenant=tenant, name=name, secret_sha256=key_digest(key))
    session.add(row)
    session.flush()
    return row, key


def revoke_key(session: Session, key_or_id: str) -> ApiKey:
    key_id = _key_id(key_or_id) or key_or_id
    row = session.get(ApiKey, key_id)
    if row is None:
        raise AccessError(f"no API key {key_id!r} (see 'dataset-audit keys list')")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def list_keys(session: Session, tenant: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.tenant, ApiKey.created_at)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    return list(session.scalars(query))


# Webhook secrets: one per tenant, made with it (``Tenant.webhook_secret``), so that no tenant
# can sign what another's receiver accepts.


def tenant_exists(session: Session, name: str) -> bool:
    return session.get(Tenant, name) is not None


def webhook_secret(session: Session, tenant: str) -> str:
    """The secret the tenant's webhook deliveries are signed with."""
    row = session.get(Tenant, tenant)
    if row is None:
        raise AccessError(f"no tenant {tenant!r}")
    return row.webhook_secret


def rotate_webhook_secret(session: Session, tenant: str) -> str:
    """A new secret for the tenant (made if new): deliveries from now on are signed with it."""
    row = ensure_tenant(session, tenant)
    row.webhook_secret = new_secret()
    return row.webhook_secret


# Quotas.


@dataclass(frozen=True)
class Usage:
    tenant: str
    active_audits: int
    stored_bytes: int
    max_active_audits: int
    max_stored_bytes: int
    created_at: datetime | None = None


class QuotaExceeded(Exception):
    """Over a tenant's quota; the message says which and what to do."""


def set_quota(
    session: Session,
    tenant: str,
    *,
    max_active_audits: int | None = None,
    max_stored_bytes: int | None = None,
) -> Tenant:
    row = ensure_tenant(session, tenant)
    if max_active_audits is not None:
        row.max_active_audits = max_active_audits
    if max_stored_bytes is not None:
        row.max_stored_bytes = max_stored_bytes
    return row


def usage(session: Session, tenant: str, settings: Settings) -> Usage:
    row = session.get(Tenant, tenant)
    active, stored = session.execute(
        select(
            func.count().filter(Audit.status.in_(ACTIVE)),
            func.coalesce(func.sum(Audit.dataset_bytes), 0),
        ).where(Audit.tenant == tenant)
    ).one()
    limits = row or Tenant(name=tenant)
    return Usage(
        tenant=tenant,
        active_audits=int(active),
        stored_bytes=int(stored),
        max_active_audits=_or(limits.max_active_audits, settings.tenant_max_active_audits),
        max_stored_bytes=_or(limits.max_stored_bytes, settings.tenant_max_stored_bytes),
        created_at=row.created_at if row is not None else None,
    )


def list_usage(session: Session, settings: Settings) -> list[Usage]:
    names = session.scalars(select(Tenant.name).order_by(Tenant.name))
    return [usage(session, name, settings) for name in names]


def check_quota(session: Session, tenant: str, settings: Settings, *, adding_bytes: int) -> None:
    """Raise QuotaExceeded unless the tenant may start one more audit of ``adding_bytes``."""
    current = usage(session, tenant, settings)
    if current.active_audits >= current.max_active_audits:
        raise QuotaExceeded(
            f"tenant {tenant!r} has {current.active_audits} audits queued or running, its limit; "
            "wait for one to finish, or cancel one (DELETE /audits/{id})"
        )
    if current.stored_bytes + adding_bytes > current.max_stored_bytes:
        raise QuotaExceeded(
            f"storing {format_bytes(adding_bytes)} more would bring tenant {tenant!r} to "
            f"{format_bytes(current.stored_bytes + adding_bytes)}, over its limit of "
            f"{format_bytes(current.max_stored_bytes)}; delete finished audits "
            "(DELETE /audits/{id}) to make room"
        )


def lock_tenant(session: Session, tenant: str) -> None:
    """Serialize quota checks of one tenant until the transaction ends: a row lock on
    PostgreSQL, the database's write lock on SQLite (a no-op update takes either at once; on
    SQLite it must come before any read, or a concurrent writer makes the upgrade fail)."""
    locked = session.execute(update(Tenant).where(Tenant.name == tenant).values(name=Tenant.name))
    if locked.rowcount == 0:  # type: ignore[attr-defined]
        ensure_tenant(session, tenant)


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _or(value: int | None, default: int) -> int:
    return default if value is None else value
