"""Webhook signatures: what a receiver checks."""

from __future__ import annotations

import time

from app.webhooks import (
    EVENT,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    new_secret,
    sign,
    signed_headers,
    verify,
)

BODY = b'{"event": "audit.finished"}'


def test_a_signature_verifies_only_with_its_secret_body_and_time() -> None:
    now = int(time.time())
    signature = sign("secret", str(now), BODY)
    assert signature.startswith("sha256=")
    assert verify("secret", str(now), BODY, signature)
    assert not verify("other", str(now), BODY, signature)
    assert not verify("secret", str(now), BODY + b" ", signature)
    assert not verify("secret", str(now + 1), BODY, signature)


def test_an_old_or_malformed_timestamp_is_refused() -> None:
    then = int(time.time()) - 3600
    assert not verify("secret", str(then), BODY, sign("secret", str(then), BODY))
    assert verify("secret", str(then), BODY, sign("secret", str(then), BODY), now=then + 60)
    assert not verify("secret", "yesterday", BODY, sign("secret", "yesterday", BODY))


def test_signed_headers_carry_a_fresh_signature_under_the_given_secret() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert new_secret() != secret
    headers = signed_headers(secret, BODY)
    assert headers[EVENT_HEADER] == EVENT
    assert verify(secret, headers[TIMESTAMP_HEADER], BODY, headers[SIGNATURE_HEADER])
    assert not verify(new_secret(), headers[TIMESTAMP_HEADER], BODY, headers[SIGNATURE_HEADER])
