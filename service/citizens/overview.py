"""What consular staff may see of the registry: counts for everyone, masked contacts for
consuls, and one citizen's full name, contacts and own words for a consul who states why
(recorded)."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from service.advisories.models import Advisory
from service.audit import service as audit
from service.checkin.models import CheckinAnswer, HelpMessage
from service.citizens import verification
from service.citizens.models import Citizen, CitizenPlace, ContactCode, is_alerted
from service.citizens.schemas import Channel, PlaceRead
from service.citizens.service import (
    Registry,
    channels_of,
    masked_contacts,
    public_status,
    read_contacts,
)
from service.errors import NotFound
from service.privacy import scrub_name


@dataclass(frozen=True)
class MaskedCitizen:
    id: str
    language: str
    channels: list[str]
    phone: str | None
    email: str | None
    country: str | None
    # Replied STOP: carriers block our texts to the number; they get e-mail only until START.
    sms_opted_out: bool = False


def count_by_country(session: Session) -> dict[str, int]:
    """Citizens alerted (models.is_alerted) per country of their current location (unknown
    at sea under '')."""
    query = (
        select(func.coalesce(CitizenPlace.country, ""), func.count())
        .join(Citizen, Citizen.id == CitizenPlace.citizen_id)
        .where(is_alerted(), CitizenPlace.kind == "current")
        .group_by(CitizenPlace.country)
    )
    return {code: count for code, count in session.execute(query)}


def citizens_in_country(
    session: Session, *, registry: Registry, country: str, limit: int, offset: int
) -> tuple[int, list[MaskedCitizen]]:
    """Citizens alerted whose current location is in a country, contacts masked."""
    where = (
        is_alerted(),
        CitizenPlace.kind == "current",
        CitizenPlace.country == country,
    )
    base = select(Citizen).join(CitizenPlace, CitizenPlace.citizen_id == Citizen.id).where(*where)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.scalars(
        base.options(selectinload(Citizen.places)).order_by(Citizen.id).limit(limit).offset(offset)
    )
    items = []
    for citizen in rows:
        masked = masked_contacts(registry, citizen)
        items.append(
            MaskedCitizen(
                id=citizen.public_id,
                language=citizen.language,
                channels=channels_of(citizen),
                phone=masked.phone,
                email=masked.email,
                country=country,
                sms_opted_out=citizen.sms_opted_out_at is not None,
            )
        )
    return total, items


class RevealedContact(BaseModel):
    address: str = Field(description="The full phone number (E.164) or e-mail address.")
    verified: bool = Field(
        description="true: its owner typed the code sent to it, and it is alerted; false: it "
        "still waits for its code (not alerted, and perhaps not the citizen's)."
    )


class SaidWords(BaseModel):
    at: datetime
    channel: str = Field(description="sms, or web (the check-in page's note).")
    answer: str = Field(description="How it was read: safe or help.")
    advisories: list[str] = Field(
        description="The advisories whose check-ins it answered (one SMS answers each that "
        "was open); empty: a cry for help that no check-in asked for."
    )
    words: str


# Enough for the latest of a crisis; older words stay in the database for the erasure to take.
# So many from their own phone (SMS replies and help messages) and so many from check-in pages,
# each: whoever holds a leaked link writes page notes, and must not push the phone's out.
SAID_SHOWN = 20


class Revealed(BaseModel):
    id: str
    status: str = Field(description='"pending" until one contact is verified, then "active".')
    name: str
    phone: RevealedContact | None
    email: RevealedContact | None
    language: str
    channels: list[Channel] = Field(description="The channels the citizen chose.")
    location: PlaceRead | None = Field(description="The citizen's current place.")
    updated_at: datetime = Field(description="When the citizen last changed their record.")
    sms_opted_out_at: datetime | None = Field(
        None,
        description="When the citizen replied STOP: nothing is texted to them (e-mail only) "
        "until they reply START.",
    )
    said: list[SaidWords] = Field(
        default_factory=list,
        description=f"The citizen's own words, newest first: at most {SAID_SHOWN} from their "
        f"phone (SMS replies, help messages; `channel` sms) and {SAID_SHOWN} from check-in "
        f"pages (`channel` web: whoever holds the link wrote them, unverified). Free text may "
        f"hold anyone's contacts, so it is read here, with a reason, never in the roll call.",
    )


def reveal_citizen(
    session: Session,
    *,
    registry: Registry,
    public_id: str,
    reason: str,
    actor: str,
    role: str,
    client: str,
    now: datetime,
    before_reading: Callable[[], None] = lambda: None,
) -> Revealed:
    """A citizen's full name, contacts, language and current place, for staff who must reach
    them; recorded in the audit log with the reason, in the caller's transaction. An erased or
    unknown citizen is a 404 (and nothing is recorded beyond the request itself).
    `before_reading` runs once the citizen is found, before anything is opened (the key's
    reveal limit: raising there reveals and records nothing)."""
    # No id has a NUL, and PostgreSQL refuses one in a text parameter.
    citizen = None
    if "\x00" not in public_id:
        citizen = session.scalar(
            select(Citizen)
            .where(Citizen.public_id == public_id, Citizen.status == "active")
            .options(selectinload(Citizen.places))
        )
    if citizen is None:
        raise NotFound("no citizen with this id")
    before_reading()
    verified = read_contacts(registry, citizen)
    waiting = {
        row.channel: registry.vault.read(
            verification.CHANNEL_FIELD[row.channel], row.contact_sealed
        )
        for row in session.scalars(select(ContactCode).where(ContactCode.citizen_id == citizen.id))
    }
    current = next((p for p in citizen.places if p.kind == "current"), None)
    name = registry.vault.read("name", citizen.name_sealed) or ""
    audit.record(
        session,
        actor=actor,
        role=role,
        client=client,
        action="reveal citizen",
        subject=citizen.public_id,
        reason=scrub_name(reason, name),
        now=now,
    )
    return Revealed(
        id=citizen.public_id,
        status=public_status(citizen),
        name=name,
        phone=_contact(verified.phone, waiting.get("sms")),
        email=_contact(verified.email, waiting.get("email")),
        language=citizen.language,
        channels=channels_of(citizen),  # type: ignore[arg-type]
        location=PlaceRead.model_validate(current, from_attributes=True) if current else None,
        updated_at=citizen.updated_at,
        sms_opted_out_at=citizen.sms_opted_out_at,
        said=_said(session, registry, citizen.id),
    )


def reason_to_keep(session: Session, *, registry: Registry, public_id: str, reason: str) -> str:
    """A refused reveal's reason as the audit log keeps it: without the citizen's name, as a
    reveal's (reveal_citizen). Nothing is shown to the caller."""
    sealed = None
    if "\x00" not in public_id:
        sealed = session.scalar(select(Citizen.name_sealed).where(Citizen.public_id == public_id))
    return scrub_name(reason, registry.vault.read("name", sealed) or "") if sealed else reason


def _said(session: Session, registry: Registry, citizen_id: int) -> list[SaidWords]:
    said: dict[tuple, SaidWords] = {}
    for from_page in (False, True):
        # One SMS under two advisories is two answers with the same words: shown once.
        kept: dict[tuple, SaidWords] = {}
        for at, channel, answer, advisory_id, sealed in session.execute(
            select(
                CheckinAnswer.answered_at,
                CheckinAnswer.channel,
                CheckinAnswer.answer,
                Advisory.public_id,
                CheckinAnswer.note_sealed,
            )
            .join(Advisory, Advisory.id == CheckinAnswer.advisory_id)
            .where(
                CheckinAnswer.citizen_id == citizen_id,
                CheckinAnswer.note_sealed.is_not(None),
                (CheckinAnswer.channel == "web") == from_page,
            )
            .order_by(CheckinAnswer.id.desc())
            .limit(SAID_SHOWN * 5)  # the same words under several advisories count once
        ):
            words = registry.vault.read("checkin-note", sealed) or ""
            found = kept.setdefault(
                (at, channel, answer, words),
                SaidWords(at=at, channel=channel, answer=answer, advisories=[], words=words),
            )
            found.advisories.append(advisory_id)
        if not from_page:
            for at, channel, sealed in session.execute(
                select(HelpMessage.received_at, HelpMessage.channel, HelpMessage.note_sealed)
                .where(HelpMessage.citizen_id == citizen_id, HelpMessage.note_sealed.is_not(None))
                .order_by(HelpMessage.id.desc())
                .limit(SAID_SHOWN)
            ):
                words = registry.vault.read("checkin-note", sealed) or ""
                kept[(at, channel, "help", words)] = SaidWords(
                    at=at, channel=channel, answer="help", advisories=[], words=words
                )
        newest = sorted(kept.items(), key=lambda item: item[1].at, reverse=True)[:SAID_SHOWN]
        said.update(newest)
    return sorted(said.values(), key=lambda each: each.at, reverse=True)


def _contact(verified: str | None, waiting: str | None) -> RevealedContact | None:
    # A channel holds one contact: verified, or waiting for its code (a new one replaces it).
    if verified is not None:
        return RevealedContact(address=verified, verified=True)
    if waiting is not None:
        return RevealedContact(address=waiting, verified=False)
    return None
