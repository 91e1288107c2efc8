"""The audit resource: upload, status, results, cancel and delete."""

from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.api.auth import TenantDep
from app.api.deps import ContextDep, in_session, require_succeeded, with_audit
from app.context import Context
from app.dispatch import dispatch
from app.formats import DatasetError, DatasetInfo, inspect_dataset
from app.queue import send_notify
from app.services import access
from app.services import audits as service
from app.tables import Audit
from app.uploads import FILE_FIELD, Upload, UploadError, receive_upload
from app.views import to_read
from dataset_audit.schemas import (
    MAX_OFFSET,
    PRESET_NAMES,
    AuditRead,
    AuditStatus,
    ErrorBody,
    FlaggedItem,
    FlaggedPage,
    FlagKind,
    Page,
    Scores,
)

log = logging.getLogger(__name__)

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")]
MAX_SEED = 2**63 - 1
MAX_NAME = 200
MAX_URL = 2048

UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": [FILE_FIELD],
                "properties": {
                    FILE_FIELD: {
                        "type": "string",
                        "format": "binary",
                        "description": "The dataset: .npz (x: uint8 images, y: integer labels), "
                        "an ImageFolder .zip (one folder per class), or .parquet (an image-bytes "
                        "column and a label column, as Hugging Face exports).",
                    },
                    "preset": {"type": "string", "enum": list(PRESET_NAMES), "default": "fast"},
                    "seed": {"type": "integer", "minimum": 0, "default": 0},
                    "name": {"type": "string", "maxLength": MAX_NAME},
                    "callback_url": {
                        "type": "string",
                        "format": "uri",
                        "maxLength": MAX_URL,
                        "description": "POSTed the audit, signed, when it ends.",
                    },
                    "reuse": {
                        "type": "boolean",
                        "default": True,
                        "description": "Answer with an earlier audit of the same content, "
                        "preset and seed when there is one.",
                    },
                },
            }
        }
    },
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Malformed multipart body.",
        413: "The upload is over the size limit.",
        415: "Not multipart/form-data.",
        422: "Bad options, or not a dataset this service reads (the detail says why).",
        429: "Over the tenant's quota of active audits or stored bytes.",
    }.items()
}
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No valid API key (when auth is on)."}
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such audit (for this tenant)."}
}
NOT_FINISHED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "The audit has not succeeded (yet)."}
}
router = APIRouter(prefix="/audits", tags=["audits"], responses=UNAUTHORIZED)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload a dataset and start auditing it",
    openapi_extra={"requestBody": UPLOAD_BODY},
    responses={
        200: {
            "model": AuditRead,
            "description": "An earlier audit of the same content with the same preset and seed "
            "(queued, running or succeeded) answers instead of a new one; send reuse=false to "
            "audit again.",
        },
        **ERRORS,
    },
)
async def create_audit(
    request: Request, response: Response, context: ContextDep, tenant: TenantDep
) -> AuditRead:
    settings = context.settings
    # Refused before the body is read when the tenant is at its quota already.
    await in_session(context, lambda session: _check_quota(session, context, tenant, 0))
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
        options = _options(upload.fields, settings.default_preset)
        if options.reuse:
            earlier = await in_session(
                context,
                lambda session: service.find_reusable(
                    session, upload.sha256, tenant=tenant, preset=options.preset, seed=options.seed
                ),
            )
            if earlier is not None:
                response.status_code = status.HTTP_200_OK
                response.headers["Location"] = f"/audits/{earlier.id}"
                return earlier
        try:
            info = await run_in_threadpool(
                inspect_dataset, upload.path, limits=settings.dataset_limits
            )
        except DatasetError as exc:
            raise HTTPException(422, f"{upload.filename or 'the file'}: {exc}") from exc
        audit_id = uuid.uuid4()
        key = f"audits/{audit_id}/dataset.{_extension(info)}"
        await run_in_threadpool(context.storage.put_file, upload.path, key)
    finally:
        upload.discard()
    audit = await run_in_threadpool(_insert, context, tenant, audit_id, key, upload, info, options)
    # When the broker is down the audit stays queued, undispatched: the reconciler sends it.
    await run_in_threadpool(dispatch, context, [audit.id])
    response.headers["Location"] = f"/audits/{audit.id}"
    return to_read(audit)


@router.get("", summary="List audits, newest first")
async def list_audits(
    context: ContextDep,
    tenant: TenantDep,
    limit: Limit = 50,
    offset: Offset = 0,
    sha256: Annotated[
        str | None,
        Query(pattern="^[0-9a-f]{64}$", description="Only audits of the file with this SHA-256."),
    ] = None,
) -> Page[AuditRead]:
    def page(session: Session) -> Page[AuditRead]:
        audits, total = service.list_audits(
            session, tenant=tenant, limit=limit, offset=offset, sha256=sha256
        )
        items = [to_read(a) for a in audits]
        return Page[AuditRead](items=items, total=total, limit=limit, offset=offset)

    return await in_session(context, page)


@router.get(
    "/{audit_id}",
    summary="An audit's status, progress and summary",
    response_model=AuditRead,
    responses=NOT_FOUND,
)
async def get_audit(audit_id: uuid.UUID, context: ContextDep, tenant: TenantDep) -> Response:
    return await with_audit(
        context, tenant, audit_id, lambda _, audit: json_response(to_read(audit))
    )


@router.get(
    "/{audit_id}/flagged",
    summary="The flagged samples, with their scores",
    response_model=FlaggedPage,
    responses={**NOT_FOUND, **NOT_FINISHED},
)
async def get_flagged(
    audit_id: uuid.UUID,
    context: ContextDep,
    tenant: TenantDep,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Annotated[
        Literal["index", "score"],
        Query(description="index: dataset order; score: most suspicious first."),
    ] = "index",
    kind: Annotated[
        FlagKind | None,
        Query(description="Only suspected poisons, or only label issues; default: both."),
    ] = None,
) -> Response:
    def page(session: Session, audit: Audit) -> Response:
        require_succeeded(audit)
        rows = service.flagged_page(
            session, audit, sort=sort, limit=limit, offset=offset, kind=kind
        )
        body = FlaggedPage(
            audit_id=audit.id,
            items=[FlaggedItem.model_validate(row, from_attributes=True) for row in rows],
            total=service.count_flagged(session, audit, kind),
            limit=limit,
            offset=offset,
            sort=sort,
            kind=kind,
        )
        return json_response(body)

    return await with_audit(context, tenant, audit_id, page)


@router.get(
    "/{audit_id}/scores",
    summary="Every sample's score, as JSON or as a NumPy .npy file",
    responses={
        **NOT_FOUND,
        **NOT_FINISHED,
        200: {"content": {"application/json": {}, "application/x-npy": {}}},
    },
    response_model=Scores,
)
async def get_scores(
    audit_id: uuid.UUID,
    context: ContextDep,
    tenant: TenantDep,
    format: Annotated[
        Literal["json", "npy"], Query(description="npy: float32 array, one score per sample.")
    ] = "json",
) -> Response:
    def scores(session: Session, audit: Audit) -> Response:
        require_succeeded(audit)
        values = service.scores(session, audit)
        if values is None:
            raise HTTPException(409, "the audit's scores are missing")
        if format == "npy":
            buffer = io.BytesIO()
            np.save(buffer, values.astype(np.float32), allow_pickle=False)
            disposition = f'attachment; filename="scores-{audit.id}.npy"'
            return Response(
                buffer.getvalue(),
                media_type="application/x-npy",
                headers={"Content-Disposition": disposition},
            )
        body = Scores(audit_id=audit.id, n_samples=values.size, scores=values.tolist())
        return JSONResponse(body.model_dump(mode="json"))

    return await with_audit(context, tenant, audit_id, scores)


@router.delete(
    "/{audit_id}",
    summary="Cancel a queued or running audit; delete a finished one and its data",
    status_code=204,
    responses={
        **NOT_FOUND,
        200: {"model": AuditRead, "description": "A queued audit, now cancelled."},
        202: {"model": AuditRead, "description": "A running audit, asked to stop."},
        204: {"description": "A finished audit, deleted with its stored data."},
    },
)
async def delete_audit(audit_id: uuid.UUID, context: ContextDep, tenant: TenantDep) -> Response:
    def cancel_or_delete(session: Session, audit: Audit) -> Response:
        if AuditStatus(audit.status).finished:
            service.delete_audit(session, audit)
            session.commit()
            context.storage.delete_prefix(f"audits/{audit.id}")
            return Response(status_code=204)
        service.request_cancel(session, audit)
        session.commit()
        session.refresh(audit)
        code = 200 if audit.status == AuditStatus.CANCELLED else 202
        if code == 200 and audit.callback_url is not None:
            try:
                send_notify(context.celery, audit.id)
            except Exception:  # the cancel stands; only its webhook is lost
                log.exception("could not queue the webhook of audit %s", audit.id)
        return JSONResponse(to_read(audit).model_dump(mode="json"), status_code=code)

    return await with_audit(context, tenant, audit_id, cancel_or_delete, write=True)


def json_response(body: BaseModel, status_code: int = 200) -> Response:
    """The model serialized once: the hot read paths skip FastAPI's second validation of a
    return value that was built from validated parts."""
    return Response(body.model_dump_json(), status_code=status_code, media_type="application/json")


@dataclass(frozen=True)
class Options:
    preset: str
    seed: int
    name: str | None
    callback_url: str | None
    reuse: bool


def _options(fields: dict[str, str], default_preset: str) -> Options:
    preset = fields.get("preset", "").strip() or default_preset
    if preset not in PRESET_NAMES:
        raise HTTPException(422, f"preset must be one of {', '.join(PRESET_NAMES)}; got {preset!r}")
    raw_seed = fields.get("seed", "").strip() or "0"
    # isascii: str.isdigit() also admits digits int() refuses, such as "²".
    if not (raw_seed.isascii() and raw_seed.isdigit()) or int(raw_seed) > MAX_SEED:
        raise HTTPException(422, f"seed must be an integer from 0 to {MAX_SEED}; got {raw_seed!r}")
    name = fields.get("name", "").strip() or None
    if name is not None and len(name) > MAX_NAME:
        raise HTTPException(422, f"name must be at most {MAX_NAME} characters")
    callback_url = fields.get("callback_url", "").strip() or None
    if callback_url is not None:
        try:
            parts = urlsplit(callback_url)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise HTTPException(422, f"callback_url must be an http(s) URL; got {callback_url!r}")
        if len(callback_url) > MAX_URL:
            raise HTTPException(422, f"callback_url must be at most {MAX_URL} characters")
    raw_reuse = fields.get("reuse", "true").strip().lower()
    if raw_reuse not in ("true", "false", "1", "0"):
        raise HTTPException(422, f"reuse must be true or false; got {raw_reuse!r}")
    return Options(preset, int(raw_seed), name, callback_url, reuse=raw_reuse in ("true", "1"))


def _extension(info: DatasetInfo) -> str:
    return {"npz": "npz", "imagefolder": "zip", "parquet": "parquet"}[info.format]


def _check_quota(session: Session, context: Context, tenant: str, adding_bytes: int) -> None:
    try:
        access.check_quota(session, tenant, context.settings, adding_bytes=adding_bytes)
    except access.QuotaExceeded as exc:
        raise HTTPException(429, str(exc)) from exc


def _insert(
    context: Context,
    tenant: str,
    audit_id: uuid.UUID,
    key: str,
    upload: Upload,
    info: DatasetInfo,
    options: Options,
) -> Audit:
    audit = Audit(
        id=audit_id,
        tenant=tenant,
        name=options.name,
        status=AuditStatus.QUEUED,
        preset=options.preset,
        seed=options.seed,
        dataset_format=info.format,
        dataset_filename=upload.filename or None,
        dataset_sha256=upload.sha256,
        dataset_bytes=upload.size,
        storage_key=key,
        n_samples=info.n_samples,
        n_classes=info.n_classes,
        image_shape=list(info.image_shape),
        classes=info.classes,
        callback_url=options.callback_url,
        deliveries=[],  # loaded, so the answer needs no session
    )
    try:
        with context.sessions() as session, session.begin():
            # Checked again under the tenant's lock: concurrent uploads cannot both squeeze in.
            access.lock_tenant(session, tenant)
            _check_quota(session, context, tenant, upload.size)
            session.add(audit)
    except Exception:
        context.storage.delete_prefix(f"audits/{audit_id}")
        raise
    return audit
