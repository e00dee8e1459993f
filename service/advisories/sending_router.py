"""Before a send: the preview that helps staff decide, and a test send to their own phone or
e-mail."""

from fastapi import APIRouter, Request

from service.advisories import service
from service.advisories.schemas import AdvisoryCreate, Preview
from service.auth import Consul, SessionDep
from service.db import utcnow

router = APIRouter(prefix="/v1/advisories", tags=["advisories"])


@router.post("/preview", response_model=Preview)
def preview(request: Request, body: AdvisoryCreate, session: SessionDep, _staff: Consul) -> Preview:
    settings = request.app.state.settings
    draft = service.draft_from_request(body, max_vertices=settings.max_area_vertices, now=utcnow())
    return service.preview(session, draft=draft, now=utcnow())
