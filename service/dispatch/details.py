"""The page behind an alert's link: the advisory revision the citizen was sent."""

from sqlalchemy.orm import Session

from service.citizens.models import Citizen
from service.dispatch.recipients import ContentCache
from service.dispatch.render import Renderer
from service.errors import NotFound
from service.ledger.models import Alert


def details_page(session: Session, *, alert: Alert, renderer: Renderer, seen: bool) -> str:
    key = (alert.advisory_id, alert.revision)
    content = ContentCache().load(session, {key}).get(key)
    if content is None:
        raise NotFound("no such alert")
    citizen = session.get(Citizen, alert.citizen_id)
    return renderer.details(content, language=citizen.language if citizen else "ko", seen=seen)
