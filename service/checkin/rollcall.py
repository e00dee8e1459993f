"""The roll call of an advisory: everyone it asked "are you safe?", with the answer in force,
counted by answer and by the country of the place that matched; and staff starting a check-in
round for an advisory of any level."""

from dataclasses import dataclass
from datetime import datetime
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
from service.errors import Conflict
from service.ledger import checkins, states
from service.ledger.models import Alert

Standing = Literal["safe", "help", "no_answer", "unreachable"]
STANDINGS: tuple[Standing, ...] = ("safe", "help", "no_answer", "unreachable")
# Every send of the check-in ended without reaching the citizen.
_NOT_REACHED = (states.FAILED, states.UNDELIVERED)
# A send that may still reach them, or did.
_MAY_REACH = (*states.OPEN, states.SENT, states.DELIVERED)


@dataclass(frozen=True)
class Entry:
    citizen_id: int
    standing: Standing
    country: str | None
    channel: str | None  # how they answered
    answered_at: datetime | None


@dataclass(frozen=True)
class RollCallRow:
    citizen_id: str
    contact: str | None  # masked
    answer: Standing
    channel: str | None
    answered_at: datetime | None
    country: str | None
    sms_opted_out: bool  # their number sent STOP: no SMS reaches them


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
    offset: int,
    now: datetime,
) -> RollCall:
    """Who was asked about this advisory and where each stands; counts cover everyone asked,
    `items` the page of those matching the filters (by answer, by country), in citizen order,
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
        if (answer is None or e.standing == answer) and (country is None or e.country == country)
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
        cid: (answer, channel, at)
        for cid, answer, channel, at in session.execute(
            select(Checkin.citizen_id, Checkin.answer, Checkin.channel, Checkin.answered_at).where(
                Checkin.advisory_id == advisory.id
            )
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
            standing = given[0]  # type: ignore[assignment]
        elif not may and failed:
            standing = "unreachable"
        else:
            standing = "no_answer"
        entries.append(
            Entry(
                citizen_id=cid,
                standing=standing,
                country=countries.get(cid),
                channel=given[1] if given else None,
                answered_at=given[2] if given else None,
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
