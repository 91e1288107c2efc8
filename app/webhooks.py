"""Webhook payloads and their signatures.

A receiver checks ``X-Audit-Signature`` (``sha256=`` and the hex HMAC-SHA256, keyed with the
shared ``WEBHOOK_SECRET``, of the ``X-Audit-Timestamp`` value, a dot, and the raw body) and
refuses old timestamps, so a captured delivery cannot be replayed later. ``verify`` does both.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx

from dataset_audit.schemas import AuditRead

EVENT = "audit.finished"
SIGNATURE_HEADER = "X-Audit-Signature"
TIMESTAMP_HEADER = "X-Audit-Timestamp"
EVENT_HEADER = "X-Audit-Event"


def payload(audit: AuditRead) -> bytes:
    return json.dumps({"event": EVENT, "audit": audit.model_dump(mode="json")}).encode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


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


def post(
    url: str, body: bytes, *, secret: str | None, timeout_s: float
) -> tuple[int | None, str | None]:
    """POST one delivery: the receiver's status code (None if it never answered) and an error."""
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", EVENT_HEADER: EVENT, TIMESTAMP_HEADER: timestamp}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if response.is_success:
        return response.status_code, None
    return response.status_code, f"the receiver answered {response.status_code}"
