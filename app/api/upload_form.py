"""``POST /audits``'s form: the dataset file and the options, parsed by a dependency.

The body is read by ``app.uploads`` rather than by FastAPI's ``Form()``: the file goes to a spool
file as it arrives, hashed on the way, and the size limit applies while it is read (Starlette's
form parser finishes reading a part before anything can refuse it). The options are still one
pydantic model, ``submission.Options``, which validates them and from which the OpenAPI schema
of the form is generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from app.api.auth import TenantDep
from app.api.deps import ContextDep
from app.context import Context
from app.services import submission
from app.uploads import FILE_FIELD, FRAMING_BYTES, Upload, UploadError, receive_upload

FILE_DESCRIPTION = (
    "The dataset: .npz (x: uint8 images, y: integer labels), an ImageFolder .zip (one folder per "
    "class), or .parquet (an image-bytes column and a label column, as Hugging Face exports)."
)


@dataclass(frozen=True)
class UploadForm:
    upload: Upload  # spooled; ``submission.submit`` removes it
    options: submission.Options


async def upload_form(request: Request, context: ContextDep, tenant: TenantDep) -> UploadForm:
    """The received form; 4xx before the body is read when the tenant is at its quota, while
    it is read when it is too large or malformed, and after when an option is wrong."""
    settings = context.settings
    # The file is at least the body less its framing: a quota it cannot fit is refused unread.
    # (A malformed length, or one over the upload limit, is the upload reader's to refuse.)
    declared = request.headers.get("content-length", "")
    well_formed = declared.isascii() and declared.isdigit() and len(declared) <= 18
    least = max(0, int(declared) - FRAMING_BYTES) if well_formed else 0
    if least > settings.max_upload_bytes:
        least = 0
    await run_in_threadpool(_check_room, context, tenant, least)
    try:
        upload = await receive_upload(
            request.headers.get("content-type"),
            request.headers.get("content-length"),
            request.stream(),
            spool_dir=settings.data_dir / "spool",
            max_bytes=settings.max_upload_bytes,
        )
    except UploadError as exc:
        raise HTTPException(exc.status_code, exc.detail) from exc
    try:
        options = submission.Options.model_validate(upload.fields, context={"settings": settings})
    except ValidationError as exc:
        upload.discard()
        raise HTTPException(422, "; ".join(error["msg"] for error in exc.errors())) from exc
    return UploadForm(upload, options)


UploadFormDep = Annotated[UploadForm, Depends(upload_form)]


def _check_room(context: Context, tenant: str, declared_bytes: int) -> None:
    try:
        submission.check_room(context, tenant, declared_bytes=declared_bytes)
    except submission.Refused as exc:
        raise HTTPException(exc.status_code, exc.detail) from exc


def request_body() -> dict[str, Any]:
    """The form's OpenAPI description, from ``submission.Options``: a form field is absent or
    text, never null, so each optional field is described by its non-null branch."""
    schema = submission.Options.model_json_schema()
    properties: dict[str, Any] = {
        FILE_FIELD: {"type": "string", "format": "binary", "description": FILE_DESCRIPTION}
    }
    for name, field in schema["properties"].items():
        branches = [b for b in field.pop("anyOf", []) if b.get("type") != "null"]
        field.pop("title", None)
        if field.get("default", "") is None:
            del field["default"]
        properties[name] = {**(branches[0] if branches else {}), **field}
    form = {"type": "object", "required": [FILE_FIELD], "properties": properties}
    return {"required": True, "content": {"multipart/form-data": {"schema": form}}}
