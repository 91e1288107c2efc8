"""Pages a person reads: the audit list, an audit's report, its thumbnails and a CSV download."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from app.api.auth import PageTenantDep
from app.api.deps import ContextDep, in_session, require_succeeded, with_audit
from app.report import audit_view, render_list, render_report
from app.services import queries
from app.tables import Audit
from app.views import to_read
from dataset_audit.schemas import MAX_OFFSET, ErrorBody

router = APIRouter(
    tags=["pages"],
    responses={401: {"description": "No valid API key (when auth is on): HTTP Basic asks for it."}},
)
LIST_PAGE = 50
# A thumbnail of an audit's sample never changes: cache it for good.
# "private": only the browser of the tenant who asked may keep it, never a shared cache.
IMMUTABLE = "private, max-age=31536000, immutable"
PageOffset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Audits to skip.")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such audit."}
}
NOT_FINISHED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "The audit has not succeeded (yet)."}
}
# An HTML page's errors are JSON all the same; given as a model, FastAPI would document them as
# the page's own text/html.
PAGE_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "No such audit.",
        "content": {"application/json": {"schema": ErrorBody.model_json_schema()}},
    }
}


@router.get("/", response_class=HTMLResponse, summary="The audits, as a page")
async def audit_list(
    context: ContextDep, tenant: PageTenantDep, offset: PageOffset = 0
) -> HTMLResponse:
    def page(session: Session) -> str:
        audits, total = queries.list_audits(session, tenant=tenant, limit=LIST_PAGE, offset=offset)
        return render_list([to_read(a) for a in audits], total, offset, LIST_PAGE)

    return HTMLResponse(await in_session(context, page))


@router.get(
    "/audits/{audit_id}/report",
    response_class=HTMLResponse,
    summary="An audit's report page",
    responses=PAGE_NOT_FOUND,
)
async def audit_report(
    audit_id: uuid.UUID, context: ContextDep, tenant: PageTenantDep
) -> HTMLResponse:
    def page(session: Session, audit: Audit) -> str:
        votes = queries.flagged_votes(session, audit)
        return render_report(audit_view(to_read(audit), audit.summary or {}, votes))

    return HTMLResponse(await with_audit(context, tenant, audit_id, page))


@router.get(
    "/audits/{audit_id}/samples/{index}.png",
    summary="A thumbnail of a sample the report pictures",
    responses={
        200: {"content": {"image/png": {}}},
        404: {"model": ErrorBody, "description": "Not pictured."},
    },
)
async def sample_thumbnail(
    audit_id: uuid.UUID, index: int, context: ContextDep, tenant: PageTenantDep
) -> Response:
    png = await with_audit(
        context,
        tenant,
        audit_id,
        lambda _, audit: context.storage.get_bytes(f"audits/{audit.id}/thumbs/{index}.png"),
    )
    if png is None:
        raise HTTPException(404, f"audit {audit_id} has no picture of sample {index}")
    return Response(png, media_type="image/png", headers={"Cache-Control": IMMUTABLE})


@router.get(
    "/audits/{audit_id}/flagged.csv",
    summary="Every flagged sample as CSV, most suspicious first",
    responses={200: {"content": {"text/csv": {}}}, **NOT_FOUND, **NOT_FINISHED},
)
async def flagged_csv(audit_id: uuid.UUID, context: ContextDep, tenant: PageTenantDep) -> Response:
    def table(session: Session, audit: Audit) -> str:
        require_succeeded(audit)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            ["index", "kind", "score", "rank", "label", "voted_label", "label_prob", "path"]
        )
        offset = 0
        while rows := queries.flagged_page(session, audit, sort="score", limit=5000, offset=offset):
            for r in rows:
                writer.writerow(
                    [
                        r.index,
                        r.kind,
                        f"{r.score:.6f}",
                        r.rank,
                        r.label,
                        r.voted_label,
                        f"{r.label_prob:.6f}",
                        spreadsheet_safe(r.path),
                    ]
                )
            offset += len(rows)
        return out.getvalue()

    body = await with_audit(context, tenant, audit_id, table)
    disposition = f'attachment; filename="flagged-{audit_id}.csv"'
    return Response(body, media_type="text/csv", headers={"Content-Disposition": disposition})


# A cell a spreadsheet would take for a formula: an ImageFolder path is a folder name the
# uploader chose, and "=HYPERLINK(...)" runs when the CSV is opened.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str | None) -> str | None:
    """The text, with a leading apostrophe when it would start a formula (OWASP's advice)."""
    return f"'{text}" if text and text.startswith(_FORMULA_START) else text
