"""Citizen registry: register, read, correct, move and erase, all with the citizen's own token."""

import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.citizens import contact
from service.citizens.models import Citizen, CitizenPlace
from service.citizens.places import resolve_place
from service.citizens.schemas import (
    CitizenCreate,
    CitizenRead,
    CitizenUpdate,
    LocationIn,
    PlaceRead,
    StayIn,
    StayRead,
)
from service.db import utcnow
from service.errors import Conflict, FieldError, InvalidInput, NotFound
from service.geo.geocoding import Geocoder
from service.geomatch import service as geomatch
from service.privacy import PersonalDataVault, token_hash

TOKEN_PREFIX = "ajc_"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class Registry:
    """What the registry needs from outside: the vault, a geocoder and the phone default region."""

    vault: PersonalDataVault
    geocoder: Geocoder
    phone_region: str


@dataclass(frozen=True)
class Contacts:
    phone: str | None
    email: str | None


@dataclass(frozen=True)
class Places:
    """Where a request puts a citizen, resolved before its write transaction begins: an address
    costs a geocoder request, and no network call may run while the write lock is held."""

    current: CitizenPlace | None = None
    stays: list[CitizenPlace] | None = None


def locate(
    registry: Registry, *, location: LocationIn | None = None, stays: list[StayIn] | None = None
) -> Places:
    """Resolve a location and stays (geocoding addresses) without touching the database."""
    return Places(
        current=None if location is None else _current_place(registry, location, field="location"),
        stays=None if stays is None else _stay_places(registry, stays),
    )


def register_citizen(
    session: Session, *, registry: Registry, data: CitizenCreate, places: Places | None = None
) -> tuple[Citizen, str]:
    """Store a new citizen; returns the record and its manage token (shown once). `places`
    from locate(): without them the data's places are resolved here, inside the caller's
    transaction, which only callers without addresses (the demo) may do."""
    places = places or locate(registry, location=data.location, stays=data.stays)
    assert places.current is not None and places.stays is not None
    contacts = _check_contacts(registry, data.phone, data.email, data.channels)
    citizen = Citizen(public_id=str(uuid.uuid4()), language=data.language, consent_at=utcnow())
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    citizen.token_hash = token_hash(token)
    citizen.name_sealed = registry.vault.seal("name", data.name)
    _apply_contacts(registry, citizen, contacts, data.channels)
    citizen.places = [places.current, *places.stays]
    session.add(citizen)
    _flush_unique(session)
    geomatch.match_citizen(session, citizen_id=citizen.id, now=utcnow())
    return citizen, token


def find_citizen(session: Session, *, public_id: str, token: str) -> Citizen:
    """The citizen the token manages; 404 for a wrong token, so ids cannot be probed."""
    # No id has a NUL, and PostgreSQL refuses one in a text parameter.
    query = select(Citizen).where(Citizen.public_id == public_id)
    citizen = None if "\x00" in public_id else session.scalar(query)
    if (
        citizen is None
        or citizen.token_hash is None
        or not hmac.compare_digest(citizen.token_hash, token_hash(token))
    ):
        raise NotFound("no citizen with this id for this token")
    return citizen


def update_citizen(
    session: Session, *, registry: Registry, citizen: Citizen, data: CitizenUpdate, places: Places
) -> Citizen:
    """Change what the body gives; new stays come resolved in `places` (from locate())."""
    given = data.model_fields_set
    current = read_contacts(registry, citizen)
    channels = data.channels if data.channels is not None else channels_of(citizen)
    # A contact not in the body keeps its stored value; one given as null is removed.
    contacts = _check_contacts(
        registry,
        data.phone,
        data.email,
        channels,
        known=Contacts(
            phone=None if "phone" in given else current.phone,
            email=None if "email" in given else current.email,
        ),
    )
    if data.name is not None:
        citizen.name_sealed = registry.vault.seal("name", data.name)
    if data.language is not None:
        citizen.language = data.language
    _apply_contacts(registry, citizen, contacts, channels)
    if data.stays is not None:
        assert places.stays is not None
        citizen.places = [p for p in citizen.places if p.kind == "current"] + places.stays
    citizen.updated_at = utcnow()
    _flush_unique(session)
    geomatch.match_citizen(session, citizen_id=citizen.id, now=utcnow())
    return citizen


def move_citizen(session: Session, *, citizen: Citizen, places: Places) -> Citizen:
    """Replace the current location with `places.current` (from locate())."""
    assert places.current is not None
    citizen.places = [p for p in citizen.places if p.kind != "current"] + [places.current]
    citizen.updated_at = utcnow()
    session.flush()
    geomatch.match_citizen(session, citizen_id=citizen.id, now=utcnow())
    return citizen


def erase_citizen(session: Session, *, citizen: Citizen) -> None:
    """Erase every personal field and place now; the bare row stays for the alert records."""
    citizen.status = "erased"
    citizen.erased_at = citizen.updated_at = utcnow()
    for column in ("name_sealed", "phone_sealed", "phone_hash", "email_sealed", "email_hash"):
        setattr(citizen, column, None)
    citizen.token_hash = None
    citizen.notify_sms = citizen.notify_email = False
    citizen.places = []
    session.flush()
    geomatch.cancel_pending_for(session, citizen_id=citizen.id)


def channels_of(citizen: Citizen) -> list[str]:
    return [
        name for name, on in (("sms", citizen.notify_sms), ("email", citizen.notify_email)) if on
    ]


def read_contacts(registry: Registry, citizen: Citizen) -> Contacts:
    vault = registry.vault
    return Contacts(
        phone=vault.open("phone", citizen.phone_sealed) if citizen.phone_sealed else None,
        email=vault.open("email", citizen.email_sealed) if citizen.email_sealed else None,
    )


def masked_contacts(registry: Registry, citizen: Citizen) -> Contacts:
    """Contacts as staff see them: +82******5678, j***@example.com."""
    found = read_contacts(registry, citizen)
    return Contacts(
        phone=contact.mask_phone(found.phone) if found.phone else None,
        email=contact.mask_email(found.email) if found.email else None,
    )


def to_read(registry: Registry, citizen: Citizen) -> CitizenRead:
    contacts = read_contacts(registry, citizen)
    current = next((p for p in citizen.places if p.kind == "current"), None)
    return CitizenRead(
        id=citizen.public_id,
        status=citizen.status,
        name=registry.vault.open("name", citizen.name_sealed) if citizen.name_sealed else "",
        phone=contacts.phone,
        email=contacts.email,
        language=citizen.language,
        channels=channels_of(citizen),
        location=PlaceRead.model_validate(current, from_attributes=True) if current else None,
        stays=[
            StayRead.model_validate(p, from_attributes=True)
            for p in citizen.places
            if p.kind == "stay"
        ],
        created_at=citizen.created_at,
        updated_at=citizen.updated_at,
    )


def _check_contacts(
    registry: Registry,
    phone: str | None,
    email: str | None,
    channels: list[str],
    *,
    known: Contacts | None = None,
) -> Contacts:
    """Normalise new contacts and check each chosen channel has one; all problems at once."""
    errors: list[FieldError] = []
    new_phone = new_email = None
    if phone is not None:
        try:
            new_phone = contact.normalise_phone(phone, default_region=registry.phone_region)
        except contact.ContactError as exc:
            errors.append(FieldError("phone", str(exc)))
    if email is not None:
        try:
            new_email = contact.normalise_email(email)
        except contact.ContactError as exc:
            errors.append(FieldError("email", str(exc)))
    final = Contacts(
        phone=new_phone or (known.phone if known else None),
        email=new_email or (known.email if known else None),
    )
    if not errors:
        if "sms" in channels and final.phone is None:
            errors.append(FieldError("channels", "sms needs a phone number"))
        elif "sms" in channels and not contact.can_receive_sms(final.phone or ""):
            errors.append(FieldError("phone", "this number cannot receive SMS (landline?)"))
        if "email" in channels and final.email is None:
            errors.append(FieldError("channels", "email needs an e-mail address"))
    if errors:
        raise InvalidInput.of(errors)
    return final


def _apply_contacts(
    registry: Registry, citizen: Citizen, contacts: Contacts, channels: list[str]
) -> None:
    vault = registry.vault
    citizen.phone_sealed = vault.seal("phone", contacts.phone) if contacts.phone else None
    citizen.phone_hash = vault.lookup_hash("phone", contacts.phone) if contacts.phone else None
    citizen.email_sealed = vault.seal("email", contacts.email) if contacts.email else None
    citizen.email_hash = (
        vault.lookup_hash("email", contacts.email.lower()) if contacts.email else None
    )
    citizen.notify_sms = "sms" in channels
    citizen.notify_email = "email" in channels


def _current_place(registry: Registry, location: LocationIn, *, field: str) -> CitizenPlace:
    place = resolve_place(location, field=field, geocoder=registry.geocoder)
    return CitizenPlace(
        kind="current", source=place.source, lat=place.lat, lon=place.lon, country=place.country
    )


def _stay_places(registry: Registry, stays: list[StayIn]) -> list[CitizenPlace]:
    today = utcnow().date()
    places = []
    for i, stay in enumerate(stays):
        if stay.ends_on < today:
            raise InvalidInput(f"stays[{i}].to", "this stay has already ended")
        place = resolve_place(stay, field=f"stays[{i}]", geocoder=registry.geocoder)
        places.append(
            CitizenPlace(
                kind="stay",
                source=place.source,
                lat=place.lat,
                lon=place.lon,
                country=place.country,
                starts_on=stay.starts_on,
                ends_on=stay.ends_on,
            )
        )
    return places


def _flush_unique(session: Session) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        text = str(exc.orig)
        if "phone_hash" in text:
            raise Conflict("this phone number is already registered") from exc
        if "email_hash" in text:
            raise Conflict("this e-mail address is already registered") from exc
        raise
