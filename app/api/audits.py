"""The audit resource: upload, status, results, cancel and delete."""

from __future__ import annotations

import io
import uuid
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.api.auth import TenantDep
from app.api.deps import ContextDep, in_session, in_thread, require_succeeded, with_audit
from app.api.upload_form import UploadFormDep, request_body
from app.services import queries, submission
from app.tables import Audit
from app.views import to_read
from dataset_audit.schemas import (
    MAX_OFFSET,
    AuditRead,
    DryRun,
    ErrorBody,
    FlaggedItem,
    FlaggedPage,
    FlagKind,
    Page,
    Scores,
)

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")]

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
    response_model=AuditRead,
    summary="Upload a dataset and start auditing it",
    openapi_extra={"requestBody": request_body()},
    responses={
        200: {
            "model": AuditRead | DryRun,
            "description": "An earlier audit of the same content with the same preset, seed "
            "and image_size (queued, running or succeeded) answers instead of a new one; send "
            "reuse=false to audit again. With dry_run=true: the dataset as inspected and its "
            "cost estimate (DryRun), nothing stored or queued.",
        },
        **ERRORS,
    },
)
async def create_audit(
    form: UploadFormDep,
    response: Response,
    context: ContextDep,
    tenant: TenantDep,
    dry_run: Annotated[
        bool,
        Query(description="Inspect the dataset and answer its cost estimate (200, DryRun) "
              "without storing or queueing it."),
    ] = False,
) -> AuditRead | JSONResponse:  # fmt: skip
    try:
        if dry_run:
            answer = await run_in_threadpool(submission.dry_run, context, form.upload, form.options)
            return JSONResponse(answer.model_dump(mode="json"))
        submitted = await run_in_threadpool(
            submission.submit, context, tenant, form.upload, form.options
        )
    except submission.Refused as exc:
        raise HTTPException(exc.status_code, exc.detail) from exc
    if submitted.reused:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/audits/{submitted.audit.id}"
    return submitted.audit


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
        audits, total = queries.list_audits(
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
        rows = queries.flagged_page(
            session, audit, sort=sort, limit=limit, offset=offset, kind=kind
        )
        body = FlaggedPage(
            audit_id=audit.id,
            items=[FlaggedItem.model_validate(row, from_attributes=True) for row in rows],
            total=queries.count_flagged(session, audit, kind),
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
        values = queries.scores(session, audit)
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
        200: {
            "model": AuditRead,
            "description": "A queued audit, or one running in parts, now cancelled.",
        },
        202: {"model": AuditRead, "description": "A running audit, asked to stop."},
        204: {"description": "A finished audit, deleted with its stored data."},
    },
)
async def delete_audit(audit_id: uuid.UUID, context: ContextDep, tenant: TenantDep) -> Response:
    try:
        audit = await in_thread(context, submission.withdraw, context, tenant, audit_id)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    if audit is None:
        return Response(status_code=204)
    return json_response(audit, 200 if audit.status == "cancelled" else 202)


def json_response(body: BaseModel, status_code: int = 200) -> Response:
    """The model serialized once: the hot read paths skip FastAPI's second validation of a
    return value that was built from validated parts."""
    return Response(body.model_dump_json(), status_code=status_code, media_type="application/json")
