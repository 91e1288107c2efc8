"""Webhook payloads and their signatures.

Every delivery is signed with its tenant's own secret (``dataset-audit tenants set NAME
--rotate-webhook-secret`` shows a new one): ``X-Audit-Signature`` is ``sha256=`` and the hex
HMAC-SHA256 of the ``X-Audit-Timestamp`` value, a dot, and the raw body. A receiver recomputes it
and refuses old timestamps, so a captured delivery cannot be replayed later; ``verify`` does both.
A secret is per tenant so that no tenant can sign a delivery that another's receiver accepts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time

from dataset_audit.schemas import AuditRead

EVENT = "audit.finished"
SIGNATURE_HEADER = "X-Audit-Signature"
TIMESTAMP_HEADER = "X-Audit-Timestamp"
EVENT_HEADER = "X-Audit-Event"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """256 random bits, recognisable as a webhook secret by its prefix."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def payload(audit: AuditRead) -> bytes:
    return json.dumps({"event": EVENT, "audit": audit.model_dump(mode="json")}).encode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signed_headers(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    return {
        "Content-Type": "application/json",
        EVENT_HEADER: EVENT,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether a delivery is authentic and fresh."""
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return False
    return abs(age) <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)
