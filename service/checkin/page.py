"""The check-in link's page (`/c/{token}`): reading it records nothing (link scanners and
message previews open links too); the citizen's own button press (POST) records the answer."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.advisories.models import Advisory
from service.checkin.answers import (
    NOTE_MAX,
    Recorded,
    answering,
    note_kept,
    open_checkins,
    record_answer,
)
from service.checkin.models import Checkin, CheckinAnswer
from service.checkin.replies import Answer
from service.citizens.models import Citizen
from service.dispatch.recipients import ContentCache
from service.dispatch.reference import Links
from service.dispatch.render import Renderer
from service.errors import InvalidInput, NotFound, TooManyRequests

# Answers one link may record in an hour: enough to change one's mind many times, not to fill
# a table. Past it a safe is refused (429); a help is never refused, but while help is already
# the answer in force it is not stored again: whoever holds a leaked link cannot fill the table,
# nor push the citizen's own words out of what a consul is shown.
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
    duty_paged: bool = True,
) -> CheckinPage:
    """The page for a genuine token; with `answer` ("safe" or "help"), that answer recorded
    first. A forged, altered or expired token, or one naming an erased citizen, is a 404.
    `duty_paged`: whether a help is sent to duty staff at once (the page says so, or not)."""
    target = links.read_checkin(token, now)
    citizen = None
    if target is not None:
        found = select(Citizen).where(Citizen.id == target.citizen_id)
        # An answer holds the record against an erasure at the same moment (answers.answering).
        citizen = session.scalar(answering(found) if answer is not None else found)
    advisory = session.get(Advisory, target.advisory_id) if target else None
    if target is None or citizen is None or citizen.status != "active" or advisory is None:
        raise NotFound("no such check-in")
    recorded: tuple[Recorded, ...] = ()
    if answer is not None:
        if answer not in ("safe", "help"):
            raise InvalidInput("answer", "must be safe or help")
        if note is not None:
            # Counted as the page's maxlength counts: a browser sends each line break of the
            # textarea as CRLF, and a probe's help of 499 characters in 25 lines came as 523
            # and was refused.
            note = note.replace("\r\n", "\n")
            if len(note) > NOTE_MAX:
                raise InvalidInput("note", f"at most {NOTE_MAX} characters")
        # A help is never refused; a safe at most MAX_ANSWERS an hour from pages (whoever holds
        # a leaked link cannot lock the citizen out of crying for help, nor out of tomorrow).
        full = _web_answers(session, advisory.id, citizen.id, now) >= MAX_ANSWERS
        if answer == "safe" and full:
            raise TooManyRequests("this check-in has recorded enough answers", retry_after_s=3600)
        chosen: Answer = "safe" if answer == "safe" else "help"
        current = _in_force_locked(session, advisory.id, citizen.id) if full else None
        if current is not None and current.answer == "help":
            # Already on record as help (and the duty staff told): no more rows. New words go
            # after those of the page help in force while it has room; words already kept are
            # never replaced (a probe's leaked link overwrote the citizen's "trapped, 5th floor"
            # with "false alarm, no need to call"). When the help in force came by SMS, they
            # are recorded below, once, as the page help in force.
            kept = note_kept(note)
            added = _add_to_page_help(session, links, current, kept, now) if kept else 0
            if added is not None:
                # It still answers the real check-ins open without a help (a review: a full
                # drill link left the real ones saying "no answer" to "building collapsed").
                others = _answered_by_the_page(session, advisory, citizen.id, "help", now=now)
                return _page(
                    session,
                    renderer,
                    advisory,
                    citizen,
                    confirmed=True,
                    recorded=_record(
                        session,
                        links,
                        citizen.id,
                        [each for each in others if each != advisory.id],
                        answer="help",
                        note=note,
                        now=now,
                    ),
                    duty_paged=duty_paged,
                    # A probe: a leaked link filled the note, and the citizen's later words
                    # were dropped under "Recorded". The page says so, and where to say them.
                    words_cut=added < len(kept or ""),
                )
        answered = _answered_by_the_page(session, advisory, citizen.id, chosen, now=now)
        recorded = _record(session, links, citizen.id, answered, answer=chosen, note=note, now=now)
    return _page(
        session,
        renderer,
        advisory,
        citizen,
        confirmed=bool(recorded),
        recorded=recorded,
        duty_paged=duty_paged,
    )


def _record(
    session: Session,
    links: Links,
    citizen_id: int,
    advisory_ids: list[int],
    *,
    answer: Answer,
    note: str | None,
    now: datetime,
) -> tuple[Recorded, ...]:
    """The page's answer to each of these check-ins, in the order the SMS webhook locks them."""
    return tuple(
        record_answer(
            session,
            vault=links.vault,
            advisory_id=advisory_id,
            citizen_id=citizen_id,
            answer=answer,
            channel="web",
            note=note,
            now=now,
        )
        for advisory_id in sorted(advisory_ids)
    )


def _in_force_locked(session: Session, advisory_id: int, citizen_id: int) -> Checkin | None:
    """The answer in force, every answer in force of the citizen's locked first in advisory
    order, as every writer locks them (the page may go on to answer the others: a review
    found it locking this one first, against the SMS webhook's order)."""
    rows = session.scalars(
        select(Checkin)
        .where(Checkin.citizen_id == citizen_id)
        .order_by(Checkin.advisory_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return next((row for row in rows if row.advisory_id == advisory_id), None)


def _add_to_page_help(
    session: Session, links: Links, current: Checkin, note: str, now: datetime
) -> int | None:
    """New words after those of the page help in force, while it has room: how many of their
    characters were kept (None: the help in force came by SMS). Words added make the help
    newer to read (`words_at`, which `latest_help_at` counts), so a consul who read the row
    before them cannot close the case on that reading; `answered_at` stays, the duty notice's
    clock (a review: moving it let a leaked link put off the notice for hours)."""
    given = session.get(CheckinAnswer, current.answer_id, with_for_update=True)
    if given is None or given.channel != "web" or given.answer != "help":
        return None
    if given.note_sealed and not links.vault.opens("checkin-note", given.note_sealed):
        # Left as they are (listed again, the secret opens them): the words go in a new help.
        return None
    before = links.vault.read("checkin-note", given.note_sealed) or ""
    room = NOTE_MAX - len(before) - 1 if before else NOTE_MAX
    if room <= 0:
        return 0
    joined = f"{before}\n{note[:room]}" if before else note[:room]
    given.note_sealed = links.vault.seal("checkin-note", joined)
    current.words_at = now
    session.flush()
    return min(room, len(note))


def _page(
    session: Session,
    renderer: Renderer,
    advisory: Advisory,
    citizen: Citizen,
    *,
    confirmed: bool,
    recorded: tuple[Recorded, ...] = (),
    duty_paged: bool = True,
    words_cut: bool = False,
) -> CheckinPage:
    """The page with the answer in force; `confirmed` says the press was taken, `words_cut`
    that its words were not all kept."""
    key = (advisory.id, advisory.revision)
    content = ContentCache().load(session, {key}).get(key)
    if content is None:
        raise NotFound("no such check-in")
    current = session.execute(
        select(Checkin.answer, Checkin.safe_said_at).where(
            Checkin.advisory_id == advisory.id, Checkin.citizen_id == citizen.id
        )
    ).first()
    html = renderer.checkin_page(
        content,
        language=citizen.language,
        answer=current.answer if current else None,
        recorded=confirmed,
        duty_paged=duty_paged,
        # Their safe is kept, and their help stays until a consul confirms it.
        safe_said=bool(current and current.answer == "help" and current.safe_said_at),
        help_kept=any(each.help_kept for each in recorded),
        words_cut=words_cut,
    )
    return CheckinPage(html=html, recorded=recorded)


def _answered_by_the_page(
    session: Session, advisory: Advisory, citizen_id: int, answer: Answer, *, now: datetime
) -> list[int]:
    """The page's advisory; and for a help, every real check-in open for the citizen whose
    answer in force is not help yet, as an SMS answer counts ("I need help" pressed under one
    advisory leaves no other roll call saying "no answer" or "safe"). That holds on a drill's
    page too: a probe's "REAL: building collapsed" pressed on a drill's link during a real
    crisis was filed under the drill alone, the real roll calls said "no answer" and the duty
    notice said exercise. A safe answers its own advisory only: a link can be forwarded or
    leaked, and must not clear a cry for help given elsewhere. No real page answers a drill."""
    if answer != "help":
        return [advisory.id]
    opened = open_checkins(session, citizen_id=citizen_id, now=now)
    if advisory.exercise:
        # `opened` holds drills only when no real check-in is open.
        others = list(
            session.scalars(
                select(Advisory.id).where(Advisory.id.in_(opened), Advisory.exercise.is_(False))
            )
        )
    elif advisory.id in opened:
        others = [each for each in opened if each != advisory.id]
    else:
        return [advisory.id]  # then `opened` may be drills
    already = set(
        session.scalars(
            select(Checkin.advisory_id).where(
                Checkin.citizen_id == citizen_id,
                Checkin.advisory_id.in_(others),
                Checkin.answer == "help",
            )
        )
    )
    return [advisory.id, *(each for each in others if each not in already)]


def _web_answers(session: Session, advisory_id: int, citizen_id: int, now: datetime) -> int:
    """Answers given on pages for this check-in in the last hour."""
    return (
        session.scalar(
            select(func.count())
            .select_from(CheckinAnswer)
            .where(
                CheckinAnswer.advisory_id == advisory_id,
                CheckinAnswer.citizen_id == citizen_id,
                CheckinAnswer.channel == "web",
                CheckinAnswer.answered_at >= now - timedelta(hours=1),
            )
        )
        or 0
    )
