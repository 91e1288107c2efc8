"""Who is asking: the tenant of the request's API key.

Programs send ``Authorization: Bearer <key>``. Requests that only read (GET, HEAD) also accept
HTTP Basic with the key as the password (any user name), so that a browser asks for it with its
own prompt. Not the others: a browser sends remembered Basic credentials with any request,
including a form another site posts to ``POST /audits``, but never a Bearer key on its own. With
auth off (the embedded default), every request acts for the tenant "default".
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.deps import ContextDep, in_session
from app.services import access
from app.tables import DEFAULT_TENANT

API_CHALLENGE = 'Bearer realm="dataset-audit"'
PAGE_CHALLENGE = 'Basic realm="dataset-audit", charset="UTF-8"'
# Declares the scheme in the OpenAPI schema, so that /docs can send a key ("Authorize").
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="APIKey",
    description="A key from 'dataset-audit keys create --tenant NAME' (when AUTH is on).",
)


SAFE_METHODS = ("GET", "HEAD")


def presented_key(authorization: str | None, *, basic: bool = True) -> str | None:
    """The key in an ``Authorization`` header: Bearer, or (when ``basic``) the password of
    Basic."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic" and basic:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


async def _tenant(request: Request, context: ContextDep, challenge: str) -> str:
    if not context.settings.auth:
        return DEFAULT_TENANT
    authorization = request.headers.get("authorization")
    key = presented_key(authorization, basic=request.method in SAFE_METHODS)
    if key is None:
        if presented_key(authorization) is not None:  # Basic, on a request that changes things
            raise HTTPException(
                401,
                "HTTP Basic is accepted only for reading; send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": API_CHALLENGE},
            )
        raise HTTPException(
            401,
            "an API key is required: send 'Authorization: Bearer <key>' "
            "(an administrator makes keys with 'dataset-audit keys create')",
            headers={"WWW-Authenticate": challenge},
        )
    digest = access.key_digest(key)
    tenant = context.keys.get(digest)
    if tenant is None:
        tenant = await in_session(context, lambda session: access.tenant_for_key(session, key))
        if tenant is None:
            raise HTTPException(
                401, "the API key is not valid: unknown or revoked",
                headers={"WWW-Authenticate": challenge},
            )  # fmt: skip
        context.keys.put(digest, tenant)
    return tenant


async def api_tenant(
    request: Request,
    context: ContextDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
) -> str:
    return await _tenant(request, context, API_CHALLENGE)


async def page_tenant(request: Request, context: ContextDep) -> str:
    return await _tenant(request, context, PAGE_CHALLENGE)


TenantDep = Annotated[str, Depends(api_tenant)]
PageTenantDep = Annotated[str, Depends(page_tenant)]
