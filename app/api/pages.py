"""Pages a person reads: the audit list, an audit's report, its thumbnails and a CSV download."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from app.api.deps import ContextDep, in_session, require_succeeded, with_audit
from app.models import Audit
from app.report import audit_view, render_list, render_report
from app.services import audits as service
from app.views import to_read

router = APIRouter(tags=["pages"])
LIST_PAGE = 50
# A thumbnail of an audit's sample never changes: cache it for good.
IMMUTABLE = "public, max-age=31536000, immutable"


@router.get("/", response_class=HTMLResponse, summary="The audits, as a page")
async def audit_list(context: ContextDep, offset: Annotated[int, Query(ge=0)] = 0) -> HTMLResponse:
    def page(session: Session) -> str:
        audits, total = service.list_audits(session, limit=LIST_PAGE, offset=offset)
        return render_list([to_read(a) for a in audits], total, offset, LIST_PAGE)

    return HTMLResponse(await in_session(context, page))


@router.get(
    "/audits/{audit_id}/report", response_class=HTMLResponse, summary="An audit's report page"
)
async def audit_report(audit_id: uuid.UUID, context: ContextDep) -> HTMLResponse:
    def page(session: Session, audit: Audit) -> str:
        votes = service.flagged_votes(session, audit)
        return render_report(audit_view(to_read(audit), audit.summary or {}, votes))

    return HTMLResponse(await with_audit(context, audit_id, page))


@router.get(
    "/audits/{audit_id}/samples/{index}.png",
    summary="A thumbnail of a sample the report pictures",
    responses={200: {"content": {"image/png": {}}}, 404: {"description": "Not pictured."}},
)
async def sample_thumbnail(audit_id: uuid.UUID, index: int, context: ContextDep) -> Response:
    png = await in_session(
        context, lambda _: context.storage.get_bytes(f"audits/{audit_id}/thumbs/{index}.png")
    )
    if png is None:
        raise HTTPException(404, f"audit {audit_id} has no picture of sample {index}")
    return Response(png, media_type="image/png", headers={"Cache-Control": IMMUTABLE})


@router.get(
    "/audits/{audit_id}/flagged.csv",
    summary="Every flagged sample as CSV, most suspicious first",
    responses={200: {"content": {"text/csv": {}}}},
)
async def flagged_csv(audit_id: uuid.UUID, context: ContextDep) -> Response:
    def table(session: Session, audit: Audit) -> str:
        require_succeeded(audit)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["index", "score", "rank", "label", "voted_label", "label_prob", "path"])
        offset = 0
        while rows := service.flagged_page(session, audit, sort="score", limit=5000, offset=offset):
            for r in rows:
                writer.writerow(
                    [
                        r.index,
                        f"{r.score:.6f}",
                        r.rank,
                        r.label,
                        r.voted_label,
                        f"{r.label_prob:.6f}",
                        r.path,
                    ]
                )
            offset += len(rows)
        return out.getvalue()

    body = await with_audit(context, audit_id, table)
    disposition = f'attachment; filename="flagged-{audit_id}.csv"'
    return Response(body, media_type="text/csv", headers={"Content-Disposition": disposition})
