"""The check-in link's page (`/c/{token}`): reading it records nothing (link scanners and
message previews open links too); the citizen's own button press (POST) records the answer."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.advisories.models import Advisory
from service.checkin.answers import NOTE_MAX, Recorded, open_checkins, record_answer
from service.checkin.models import Checkin, CheckinAnswer
from service.checkin.replies import Answer
from service.citizens.models import Citizen
from service.dispatch.recipients import ContentCache
from service.dispatch.reference import Links
from service.dispatch.render import Renderer
from service.errors import InvalidInput, NotFound, TooManyRequests

# Answers one link may record: enough to change one's mind many times, not to fill a table.
MAX_ANSWERS = 20


@dataclass(frozen=True)
class CheckinPage:
    html: str
    # The page's own advisory first, then each other open real check-in the answer counts for.
    recorded: tuple[Recorded, ...] = ()


def checkin_page(
    session: Session,
    *,
    links: Links,
    renderer: Renderer,
    token: str,
    now: datetime,
    answer: str | None = None,
    note: str | None = None,
) -> CheckinPage:
    """The page for a genuine token; with `answer` ("safe" or "help"), that answer recorded
    first. A forged, altered or expired token, or one naming an erased citizen, is a 404."""
    target = links.read_checkin(token, now)
    citizen = session.get(Citizen, target.citizen_id) if target else None
    advisory = session.get(Advisory, target.advisory_id) if target else None
    if target is None or citizen is None or citizen.status != "active" or advisory is None:
        raise NotFound("no such check-in")
    recorded: tuple[Recorded, ...] = ()
    if answer is not None:
        if answer not in ("safe", "help"):
            raise InvalidInput("answer", "must be safe or help")
        if note is not None and len(note) > NOTE_MAX:
            raise InvalidInput("note", f"at most {NOTE_MAX} characters")
        if _answers_given(session, advisory.id, citizen.id) >= MAX_ANSWERS:
            raise TooManyRequests("this check-in has recorded enough answers", retry_after_s=3600)
        chosen: Answer = "safe" if answer == "safe" else "help"
        recorded = tuple(
            record_answer(
                session,
                vault=links.vault,
                advisory_id=advisory_id,
                citizen_id=citizen.id,
                answer=chosen,
                channel="web",
                note=note,
                now=now,
            )
            # In the order the SMS webhook locks them in.
            for advisory_id in sorted(
                _answered_by_the_page(session, advisory, citizen.id, chosen, now=now)
            )
        )
    key = (advisory.id, advisory.revision)
    content = ContentCache().load(session, {key}).get(key)
    if content is None:
        raise NotFound("no such check-in")
    current = session.scalar(
        select(Checkin.answer).where(
            Checkin.advisory_id == advisory.id, Checkin.citizen_id == citizen.id
        )
    )
    html = renderer.checkin_page(
        content, language=citizen.language, answer=current, recorded=bool(recorded)
    )
    return CheckinPage(html=html, recorded=recorded)


def _answered_by_the_page(
    session: Session, advisory: Advisory, citizen_id: int, answer: Answer, *, now: datetime
) -> list[int]:
    """The page's advisory, and with a real one every other real check-in open for the
    citizen, as an SMS answer counts: "I need help" pressed under one advisory leaves no other
    roll call saying "no answer" (nor its reminders asking). A drill's page answers the drill
    only, and no real answer is ever filed under a drill."""
    if advisory.exercise:
        return [advisory.id]
    opened = open_checkins(session, citizen_id=citizen_id, now=now)
    if advisory.id not in opened:
        return [advisory.id]  # then `opened` may be drills
    # Another check-in is written only when this changes its answer in force, and past its
    # own cap only for a help (a link pressed 20 times must not use up the other link's
    # answers, nor leave its roll call saying safe of someone who now needs help).
    standing = {
        advisory_id: given
        for advisory_id, given in session.execute(
            select(Checkin.advisory_id, Checkin.answer).where(
                Checkin.citizen_id == citizen_id, Checkin.advisory_id.in_(opened)
            )
        )
    }
    others = [
        each
        for each in opened
        if each != advisory.id
        and standing.get(each) != answer
        and (answer == "help" or _answers_given(session, each, citizen_id) < MAX_ANSWERS)
    ]
    return [advisory.id, *others]


def _answers_given(session: Session, advisory_id: int, citizen_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(CheckinAnswer)
            .where(CheckinAnswer.advisory_id == advisory_id, CheckinAnswer.citizen_id == citizen_id)
        )
        or 0
    )
