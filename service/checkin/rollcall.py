"""The roll call of an advisory: everyone it asked "are you safe?", with the answer in force,
counted by answer and by the country of the place that matched; and staff starting a check-in
round for an advisory of any level."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from service.advisories import reach
from service.advisories.models import Advisory
from service.advisories.service import draft_of
from service.checkin.answers import asks
from service.checkin.models import Checkin
from service.citizens.models import Citizen, CitizenPlace
from service.citizens.service import Registry, masked_contacts
from service.errors import Conflict, NotFound, TooManyRequests
from service.ledger import checkins, states
from service.ledger.models import Alert

Standing = Literal["safe", "help", "no_answer", "unreachable"]
STANDINGS: tuple[Standing, ...] = ("safe", "help", "no_answer", "unreachable")
# Every send of the check-in ended without reaching the citizen.
_NOT_REACHED = (states.FAILED, states.UNDELIVERED)
# The least time between two roll-call rounds of one advisory.
ROUND_GAP = timedelta(minutes=10)
# A send that may still reach them, or did.
_MAY_REACH = (*states.OPEN, states.SENT, states.DELIVERED)


@dataclass(frozen=True)
class Entry:
    citizen_id: int
    standing: Standing
    country: str | None
    channel: str | None  # how they answered
    answered_at: datetime | None
    taken_by: str | None = None
    taken_at: datetime | None = None


@dataclass(frozen=True)
class RollCallRow:
    citizen_id: str
    contact: str | None  # masked
    answer: Standing
    channel: str | None
    answered_at: datetime | None
    country: str | None
    sms_opted_out: bool  # their number sent STOP: no SMS reaches them
    taken_by: str | None  # the consul handling them
    taken_at: datetime | None


@dataclass(frozen=True)
class RollCall:
    exercise: bool  # a drill's roll call, to be kept apart from real ones
    counts: dict[str, int]
    by_country: dict[str, dict[str, int]]
    total: int  # rows matching the filters
    items: list[RollCallRow]


def roll_call(
    session: Session,
    *,
    advisory: Advisory,
    registry: Registry,
    answer: Standing | None,
    country: str | None,
    limit: int,
    taken: bool | None = None,
    offset: int,
    now: datetime,
) -> RollCall:
    """Who was asked about this advisory and where each stands; counts cover everyone asked,
    `items` the page of those matching the filters (by answer, by country, taken by a consul
    or not), in citizen order,
    each saying whether their number sent STOP. Their words are not here: free text may hold
    any contact or address, so it comes with the audited reveal, like their contacts."""
    entries = _entries(session, advisory=advisory, now=now)
    counts = dict.fromkeys(STANDINGS, 0)
    by_country: dict[str, dict[str, int]] = {}
    for entry in entries:
        counts[entry.standing] += 1
        per = by_country.setdefault(entry.country or "??", dict.fromkeys(STANDINGS, 0))
        per[entry.standing] += 1
    chosen = [
        e
        for e in entries
        if (answer is None or e.standing == answer)
        and (country is None or e.country == country)
        and (taken is None or (e.taken_by is not None) == taken)
    ]
    page = chosen[offset : offset + limit]
    citizens = {
        c.id: c
        for c in session.scalars(
            select(Citizen).where(Citizen.id.in_([e.citizen_id for e in page]))
        )
    }
    items = []
    for entry in page:
        citizen = citizens[entry.citizen_id]
        masked = masked_contacts(registry, citizen)
        items.append(
            RollCallRow(
                citizen_id=citizen.public_id,
                contact=masked.phone or masked.email,
                answer=entry.standing,
                channel=entry.channel,
                answered_at=entry.answered_at,
                country=entry.country,
                sms_opted_out=citizen.sms_opted_out_at is not None,
                taken_by=entry.taken_by,
                taken_at=entry.taken_at,
            )
        )
    return RollCall(
        exercise=advisory.exercise,
        counts=counts,
        by_country=by_country,
        total=len(chosen),
        items=items,
    )


def _entries(session: Session, *, advisory: Advisory, now: datetime) -> list[Entry]:
    asked = session.execute(
        select(
            Alert.citizen_id,
            func.max(case((Alert.status.in_(_MAY_REACH), 1), else_=0)),
            func.max(case((Alert.status.in_(_NOT_REACHED), 1), else_=0)),
        )
        .where(Alert.advisory_id == advisory.id, asks(session, advisory.id))
        .group_by(Alert.citizen_id)
        .order_by(Alert.citizen_id)
    ).all()
    answers = {
        row.citizen_id: row
        for row in session.execute(
            select(
                Checkin.citizen_id,
                Checkin.answer,
                Checkin.channel,
                Checkin.answered_at,
                Checkin.taken_by,
                Checkin.taken_at,
            ).where(Checkin.advisory_id == advisory.id)
        )
    }
    # Someone who answered without being asked in the ledger (a roll call's row since gone)
    # still counts.
    ids = sorted({cid for cid, _, _ in asked} | answers.keys())
    reached = {cid: (may, failed) for cid, may, failed in asked}
    countries = _countries(session, advisory=advisory, ids=ids, now=now)
    entries = []
    for cid in ids:
        given = answers.get(cid)
        may, failed = reached.get(cid, (1, 0))
        standing: Standing
        if given is not None:
            standing = given.answer
        elif not may and failed:
            standing = "unreachable"
        else:
            standing = "no_answer"
        entries.append(
            Entry(
                citizen_id=cid,
                standing=standing,
                country=countries.get(cid),
                channel=given.channel if given else None,
                answered_at=given.answered_at if given else None,
                taken_by=given.taken_by if given else None,
                taken_at=given.taken_at if given else None,
            )
        )
    return entries


def _countries(
    session: Session, *, advisory: Advisory, ids: list[int], now: datetime
) -> dict[int, str | None]:
    """The country of the place that matched each citizen (as the matches listing computes it);
    for one the advisory no longer reaches, where they are now."""
    if not ids:
        return {}
    draft = draft_of(advisory)
    found = reach.reach_of_draft(session, draft, now=now)
    countries: dict[int, str | None] = {}
    places = found.places
    if places is not None:
        for cid, index in found.place_of.items():
            countries[cid] = str(places.countries[index]) or None
    missing = {cid for cid in ids if cid not in countries}
    if missing:
        # One statement over the advisory's own ledger rows (a list of ids as parameters costs
        # more to send than the query takes).
        asked = select(Alert.citizen_id).where(Alert.advisory_id == advisory.id).distinct()
        rows = session.execute(
            select(CitizenPlace.citizen_id, CitizenPlace.country)
            .where(CitizenPlace.citizen_id.in_(asked.scalar_subquery()))
            .order_by(CitizenPlace.citizen_id, CitizenPlace.kind, CitizenPlace.id)
        )
        for cid, where in rows:
            if cid in missing:
                countries.setdefault(cid, where)
    return countries


@dataclass(frozen=True)
class Round:
    round: int
    asked: int  # citizens
    queued: int  # messages


def start_round(session: Session, *, advisory: Advisory, now: datetime) -> Round:
    """Ask "are you safe?" of everyone this advisory alerted, on every channel it alerted them
    on, as the next round, ahead of any advisory in the queue. Not for a cancelled advisory."""
    if advisory.status == "cancelled":
        raise Conflict("the advisory is cancelled: there is nothing to ask about")
    last = session.scalar(
        select(func.max(Alert.checkin_round)).where(Alert.advisory_id == advisory.id)
    )
    if last:
        # Each round texts everyone at the top priority: not again while one has just gone
        # out (a double click, or a key used to spend our SMS), and asking again on its own
        # is the escalation job's.
        started = session.scalar(
            select(func.min(Alert.created_at)).where(
                Alert.advisory_id == advisory.id, Alert.checkin_round == last
            )
        )
        if started is not None and now - started < ROUND_GAP:
            wait = int((started + ROUND_GAP - now).total_seconds()) + 1
            raise TooManyRequests(
                f"round {last} was started at {started:%H:%M} UTC: the next may start "
                f"{int(ROUND_GAP.total_seconds() // 60)} minutes after it",
                retry_after_s=wait,
            )
    number = (last or 0) + 1
    queued = checkins.enqueue_round(
        session, advisory_id=advisory.id, revision=advisory.revision, checkin_round=number, now=now
    )
    asked = session.scalar(
        select(func.count(func.distinct(Alert.citizen_id))).where(
            Alert.advisory_id == advisory.id, Alert.checkin_round == number
        )
    )
    return Round(round=number, asked=asked or 0, queued=queued)


@dataclass(frozen=True)
class Taken:
    citizen_id: str
    taken_by: str | None
    taken_at: datetime | None
    advisories: list[str]  # every advisory whose help answer of theirs this took or released


def take_help(
    session: Session, *, advisory: Advisory, citizen_public_id: str, staff: str, now: datetime
) -> Taken:
    """A consul takes a citizen who needs help: every help answer of theirs (one SMS answers
    every advisory that asked; drills apart from real ones) shows the consul's name, so nobody
    else calls them meanwhile. Taking again is harmless; a citizen another consul has (under
    any advisory) is a 409 naming them: of two consuls at once, one wins."""
    citizen_id = _help_answer_of(session, advisory=advisory, citizen_public_id=citizen_public_id)
    rows = _lock_rows(session, citizen_id, exercise=advisory.exercise)
    mine = next((row for row in rows if row.advisory_id == advisory.id), None)
    if mine is None or mine.answer != "help":
        raise Conflict("their answer is no longer help: only a help answer is taken")
    holder = next((row for row in rows if row.taken_by not in (None, staff)), None)
    if holder is not None:
        since = f" at {holder.taken_at:%Y-%m-%d %H:%M} UTC" if holder.taken_at else ""
        raise Conflict(f"already taken by {holder.taken_by}{since}")
    for row in rows:
        if row.answer == "help" and row.taken_by is None:
            row.taken_by, row.taken_at = staff, now
    session.flush()
    return Taken(
        citizen_public_id, staff, mine.taken_at, _taken_advisories(session, citizen_id, staff)
    )


def release_help(
    session: Session,
    *,
    advisory: Advisory,
    citizen_public_id: str,
    staff: str,
    any_holder: bool,
) -> Taken:
    """Give a citizen back to the list of help answers nobody has taken (whatever their answer
    is now): by whoever took them, or (`any_holder`) an admin when that consul is gone."""
    citizen_id = _answer_of(session, advisory=advisory, citizen_public_id=citizen_public_id)[0]
    rows = _lock_rows(session, citizen_id, exercise=advisory.exercise)
    holder = next((row.taken_by for row in rows if row.advisory_id == advisory.id), None)
    if holder is None:
        return Taken(citizen_public_id, None, None, [])
    if holder != staff and not any_holder:
        raise Conflict(f"taken by {holder}: only they or an admin can give it back")
    released = _taken_advisories(session, citizen_id, holder)
    for row in rows:
        if row.taken_by == holder:
            row.taken_by = row.taken_at = None
    session.flush()
    return Taken(citizen_public_id, None, None, released)


def _lock_rows(session: Session, citizen_id: int, *, exercise: bool) -> list[Checkin]:
    """The citizen's answers in force (real ones, or drills), locked in advisory order: the
    order the SMS webhook and the check-in page lock them in, so none waits on another."""
    return list(
        session.scalars(
            select(Checkin)
            .join(Advisory, Advisory.id == Checkin.advisory_id)
            .where(Checkin.citizen_id == citizen_id, Advisory.exercise == exercise)
            .order_by(Checkin.advisory_id)
            .with_for_update(of=Checkin)
            .execution_options(populate_existing=True)
        )
    )


def _answer_of(session: Session, *, advisory: Advisory, citizen_public_id: str) -> tuple[int, str]:
    if "\x00" in citizen_public_id:  # no id has one, and PostgreSQL refuses it in text
        raise NotFound("no answer from this citizen to this advisory's check-in")
    found = session.execute(
        select(Citizen.id, Checkin.answer)
        .join(Checkin, Checkin.citizen_id == Citizen.id)
        .where(
            Citizen.public_id == citizen_public_id,
            Citizen.status == "active",
            Checkin.advisory_id == advisory.id,
        )
    ).first()
    if found is None:
        raise NotFound("no answer from this citizen to this advisory's check-in")
    return found[0], found[1]


def _help_answer_of(session: Session, *, advisory: Advisory, citizen_public_id: str) -> int:
    citizen_id, answer = _answer_of(session, advisory=advisory, citizen_public_id=citizen_public_id)
    if answer != "help":
        raise Conflict(f"their answer is {answer!r}: only a help answer is taken")
    return citizen_id


def _taken_advisories(session: Session, citizen_id: int, staff: str) -> list[str]:
    return list(
        session.scalars(
            select(Advisory.public_id)
            .join(Checkin, Checkin.advisory_id == Advisory.id)
            .where(Checkin.citizen_id == citizen_id, Checkin.taken_by == staff)
            .order_by(Advisory.id)
        )
    )
