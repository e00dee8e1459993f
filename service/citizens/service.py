"""Citizen registry: register, read, correct, move and erase, all with the citizen's own token."""

import hmac
import logging
import secrets
import uuid
from collections.abc import Collection, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, null, select, update
from sqlalchemy.orm import Session

from service.checkin.models import Checkin, CheckinAnswer, HelpMessage
from service.citizens import contact, messages, verification
from service.citizens.models import QUIET_HOURS_DEFAULT, Citizen, CitizenPlace, ContactCode
from service.citizens.places import AddressLookupBusy, resolve_place
from service.citizens.schemas import (
    CitizenCreate,
    CitizenRead,
    CitizenUpdate,
    LocationIn,
    PlaceRead,
    QuietHours,
    StayIn,
    StayRead,
)
from service.db import after_commit, utcnow
from service.errors import FieldError, InvalidInput, NotFound, ServiceUnavailable, TooManyRequests
from service.geo.geocoding import GeocodedPoint, Geocoder, GeocoderBusy
from service.geo.matching import earliest_date
from service.geomatch import service as geomatch
from service.ledger import outbox
from service.ledger.models import Alert
from service.privacy import UNREADABLE, PersonalDataVault, token_hash
from service.rate_limits import AddressLookups, RateLimits

TOKEN_PREFIX = "ajc_"  # noqa: S105 - a prefix, not a secret

log = logging.getLogger("anjeon.citizens")
# The geocoder answers one address a second (Nominatim's rule): more in one request would pass
# its deadline (15 s) and never be stored, and would hold the geocoder from everyone else.
MAX_ADDRESSES = 5


@dataclass(frozen=True)
class Registry:
    """What the registry needs from outside: the vault, a geocoder, the phone default region
    and the most stays a citizen may have."""

    vault: PersonalDataVault
    geocoder: Geocoder
    phone_region: str
    max_stays: int  # ANJEON_MAX_STAYS


@dataclass(frozen=True)
class Contacts:
    phone: str | None
    email: str | None

    @property
    def first_readable(self) -> str | None:
        """The phone, else the e-mail; one that no listed secret opens only when both are."""
        given = [each for each in (self.phone, self.email) if each]
        return next((each for each in given if each != UNREADABLE), given[0] if given else None)


@dataclass(frozen=True)
class Places:
    """Where a request puts a citizen, resolved before its write transaction begins: an address
    costs a geocoder request, and no network call may run while the write lock is held."""

    current: CitizenPlace | None = None
    stays: list[CitizenPlace] | None = None


def locate(
    registry: Registry,
    *,
    location: LocationIn | None = None,
    stays: list[StayIn] | None = None,
    ended_ok: bool = False,
    earlier: Sequence[FieldError] = (),
    lookups: AddressLookups | None = None,
) -> Places:
    """Resolve a location and stays (geocoding addresses) without touching the database.
    `ended_ok`: a stay that has ended is let through, for update_citizen to take only as it
    is stored. `earlier`: the request's other problems, told with these. An address is
    geocoded only when nothing else is wrong: a request refused anyway sends no address to
    the geocoder and spends none of its turns, nor any of the `lookups` limits: those are
    taken once the request is found good, before its first look-up."""
    given = [location, *(stays or [])]
    addresses = sum(1 for place in given if place is not None and place.address is not None)
    if addresses > MAX_ADDRESSES:
        raise InvalidInput(
            "stays",
            f"at most {MAX_ADDRESSES} places by address in one request "
            "(give the others as a country or a point)",
        )
    if addresses or earlier:
        # Every check that needs no geocoder first, with each address taken as found.
        _resolved(
            replace(registry, geocoder=_EVERY_ADDRESS_FOUND), location, stays, ended_ok, earlier
        )
    if addresses and lookups is not None:
        lookups.take(addresses)
    counted = _LookupsCounted(registry.geocoder)
    try:
        return _resolved(replace(registry, geocoder=counted), location, stays, ended_ok, earlier)
    except AddressLookupBusy as busy:
        busy.no_turn_spent = counted.spent == 0
        if addresses and lookups is not None:
            with suppress(ServiceUnavailable):  # the storage failed: the hits stay counted
                lookups.give_back(made=counted.spent)
        raise


class _EveryAddressFound:
    def geocode(self, address: str) -> GeocodedPoint | None:
        return GeocodedPoint(lat=0.0, lon=0.0)


_EVERY_ADDRESS_FOUND = _EveryAddressFound()


class _LookupsCounted:
    """A request's geocoder, counting the turns it spent: one for each look-up sent, and one
    for a turn taken too late to be used (a busy refusal otherwise spends none)."""

    def __init__(self, geocoder: Geocoder) -> None:
        self._geocoder = geocoder
        self.spent = 0

    def geocode(self, address: str) -> GeocodedPoint | None:
        spent = True
        try:
            return self._geocoder.geocode(address)
        except GeocoderBusy as busy:
            spent = busy.turn_taken
            raise
        finally:
            self.spent += spent


def _resolved(
    registry: Registry,
    location: LocationIn | None,
    stays: list[StayIn] | None,
    ended_ok: bool,
    earlier: Sequence[FieldError],
) -> Places:
    errors = list(earlier)
    current = places = None
    try:
        current = None if location is None else _current_place(registry, location, field="location")
    except InvalidInput as refused:
        errors += refused.errors
    try:
        places = None if stays is None else _stay_places(registry, stays, ended_ok=ended_ok)
    except InvalidInput as refused:
        errors += refused.errors
    if errors:
        raise InvalidInput.of(errors)
    return Places(current=current, stays=places)


@dataclass(frozen=True)
class CheckedRegistration:
    """A registration's places and contacts, found good before its write transaction."""

    places: Places
    contacts: Contacts


def check_change(
    registry: Registry, data: CitizenUpdate, *, lookups: AddressLookups | None = None
) -> Places:
    """A change's new contacts (as written) and stays in one answer, its stays resolved
    (geocoded) for update_citizen: call it before the write transaction. What depends on the
    stored record (a channel left without its contact, an ended stay) update_citizen checks.
    `lookups`: as locate's."""
    _, _, errors = _normalised(registry, data.phone, data.email)
    return locate(registry, stays=data.stays, ended_ok=True, earlier=errors, lookups=lookups)


def check_registration(
    registry: Registry, data: CitizenCreate, *, lookups: AddressLookups | None = None
) -> CheckedRegistration:
    """Every problem with a registration's contacts and places in one answer (a citizen fixing
    their phone number was then told their trip's country was wrong). Geocodes addresses: call
    it before the write transaction. `lookups`: as locate's."""
    errors: list[FieldError] = []
    contacts = None
    try:
        contacts = _check_contacts(registry, data.phone, data.email, data.channels)
    except InvalidInput as refused:
        errors += refused.errors
    places = locate(
        registry,
        location=data.location,
        stays=data.stays,
        earlier=errors,
        lookups=lookups,
    )
    assert contacts is not None
    return CheckedRegistration(places=places, contacts=contacts)


@dataclass(frozen=True)
class Outgoing:
    """Codes and notices a change produced, for the caller to send after its commit."""

    codes: list[verification.CodeToSend]
    notices: list[verification.Notice]


@dataclass(frozen=True)
class Registration:
    citizen: Citizen
    token: str  # the manage token, shown once
    outgoing: Outgoing


def register_citizen(
    session: Session,
    *,
    registry: Registry,
    data: CitizenCreate,
    checked: CheckedRegistration | None = None,
    verified: bool = False,
    shares: Mapping[str, str] | None = None,
) -> Registration:
    """Store a new citizen with a manage token (shown once) and a code for each contact to
    send; with `verified` (verification off, the demo) the contacts count as verified at once.
    The answer is the same whether or not a contact is known elsewhere. `checked` comes from
    check_registration(): without it the body is checked here, inside the caller's
    transaction, which only callers without addresses (the demo) may do. `shares`: each
    channel's share of unverified codes its code takes (unverified_shares), kept in the
    code's INSERT."""
    checked = checked or check_registration(registry, data)
    places, contacts = checked.places, checked.contacts
    assert places.current is not None and places.stays is not None
    now = utcnow()
    citizen = Citizen(public_id=str(uuid.uuid4()), language=data.language, consent_at=now)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    citizen.token_hash = token_hash(token)
    citizen.name_sealed = registry.vault.seal("name", data.name)
    citizen.wants_sms, citizen.wants_email = "sms" in data.channels, "email" in data.channels
    _set_quiet_hours(citizen, data.quiet_hours)
    citizen.exercises = data.exercises
    citizen.places = [places.current, *places.stays]
    # Set before the INSERT, which then carries the row as it stays: no UPDATE follows it.
    citizen.notify_sms = citizen.notify_email = False
    session.add(citizen)
    session.flush()
    outgoing = _new_contacts(
        session,
        registry,
        citizen,
        contacts,
        Contacts(None, None),
        verified=verified,
        now=now,
        fresh=True,
        shares=shares,
    )
    if citizen.notify_sms or citizen.notify_email:
        # Only an alerted citizen can match (alerted_sql): one still waiting for its codes is
        # matched when a contact is verified (verify_contact), so no query is spent here.
        geomatch.match_citizen(session, citizen_id=citizen.id, now=now)
    return Registration(citizen=citizen, token=token, outgoing=outgoing)


def verify_contact(
    session: Session,
    *,
    registry: Registry,
    limits: RateLimits,
    citizen: Citizen,
    channel: str,
    code: str,
) -> verification.Checked:
    """Check a typed code; verified, the channel is alerted from now on (and matched at once).
    A wrong try is counted in the session: the caller commits even when it answers 422. Tries
    at one contact are limited across records and codes (TooManyRequests)."""
    now = utcnow()
    checked = verification.check_code(
        session,
        vault=registry.vault,
        citizen=citizen,
        channel=channel,
        code=code,
        now=now,
        count_try=limits.take_code_try,
        check_tries=limits.check_code_tries,
        forget_tries=limits.forget_code_tries,
    )
    if checked.verified:
        geomatch.match_citizen(session, citizen_id=citizen.id, now=now)
        if checked.asked_from and checked.sent_at:
            kept, sent_at = checked.asked_from, checked.sent_at

            def give_back() -> None:
                with suppress(ServiceUnavailable):  # the storage failed: the share stays taken
                    taken_s_ago = (utcnow() - sent_at).total_seconds()
                    limits.give_back_unverified(kept, taken_s_ago=taken_s_ago)

            after_commit(session, give_back)  # a verification whose commit fails keeps it
    return checked


def waiting_contact(
    session: Session, *, registry: Registry, citizen: Citizen, channel: str
) -> tuple[str, str]:
    """(channel, address) of the contact waiting for its code on `channel`; 422 when none is."""
    address = verification.waiting_address(
        session, vault=registry.vault, citizen=citizen, channel=channel
    )
    if address is None:
        raise InvalidInput("channel", f"no {channel} contact is waiting to be verified")
    return channel, address


def resend_code(
    session: Session, *, registry: Registry, citizen: Citizen, contact: tuple[str, str]
) -> verification.CodeToSend:
    """A fresh code for the contact waiting for one (waiting_contact's (channel, address));
    the old one stops working."""
    channel, address = contact
    return verification.issue_code(
        session,
        vault=registry.vault,
        citizen=citizen,
        channel=channel,
        address=address,
        now=utcnow(),
    )


def contact_takes_a_resend(
    session: Session, limits: RateLimits, *, citizen: Citizen, contact: tuple[str, str]
) -> bool:
    """Whether the contact's own limit (rate_limit_contact, which every record naming it
    spends) has room for a resent code. When it has not, no code is sent and the one the
    citizen has stays good (a review: holding a new one voided it); the answer is the same
    202, as a registration's held code is never told. That code then starts afresh as a new
    one would (its tries, its life): a probe told a number others had asked codes for by the
    next wrong try's "3 tries left" where a renewed code says 4."""
    channel, address = contact
    if limits.take_contact(channel, address):
        return True
    log.warning("code not resent: the contact's limit", extra={"channel": channel})
    verification.restart_code(session, citizen_id=citizen.id, channel=channel, now=utcnow())
    return False


def hold_if_stopped(session: Session, code: verification.CodeToSend) -> bool:
    """Whether the code is held, not sent: it would go by SMS to a number that replied STOP.
    Asked once the code's limits are taken, as a sent code's are."""
    if not verification.said_stop(session, code):
        return False
    verification.hold(session, code, for_stop=True)
    return True


def purge_unverified(session: Session, *, now: datetime, ttl_h: int) -> int:
    """Delete records that verified no contact within ttl_h hours of registering. Not one that
    verified once and has none now (a new phone waiting for its code): deleting it lost a
    traveller, and left their alerts and check-ins without a citizen. Such a record left with
    no contact and no code asked for ORPHAN_KEPT is erased instead. Returns both counts."""
    cutoff = now - timedelta(hours=ttl_h)
    result = session.execute(
        delete(Citizen).where(
            Citizen.status == "active",
            Citizen.verified_at.is_(None),
            Citizen.phone_hash.is_(None),
            Citizen.email_hash.is_(None),
            Citizen.created_at < cutoff,
        )
    )
    # One erased before it verified anything was never alerted and never answered: its bare
    # row keeps nothing for anyone, and a script's register-and-erase loop grew the table
    # without end (a probe). Gone like an unverified one. (Those whose alerts and answers were
    # forgotten since go with them: drop_bare_rows.)
    never_verified_erased = session.execute(
        delete(Citizen).where(
            Citizen.status == "erased",
            Citizen.verified_at.is_(None),
            *_nothing_refers_to(Citizen.id),
        )
    )
    # One erased a day or two ago that nothing names (verified, never alerted): gone too. Read
    # by its erasure's stamp (an index), not by a scan of every erased record; a day on, so a
    # match or a send in flight at the erasure has landed (a review found such rows kept).
    erased_lately = session.execute(
        delete(Citizen).where(
            Citizen.status == "erased",
            Citizen.updated_at < now - _BARE_AFTER,
            Citizen.updated_at >= now - _BARE_AFTER - _BARE_LOOKED_AT,
            *_nothing_refers_to(Citizen.id),
        )
    )
    purged = (
        (result.rowcount or 0)
        + (never_verified_erased.rowcount or 0)
        + (erased_lately.rowcount or 0)
    )
    purged += _erase_orphans(session, now=now)
    outbox.forget_refs_of_erased(session, erased_since=now - _REFS_FORGOTTEN_WITHIN)
    return purged


def drop_bare_rows(session: Session, citizen_ids: Collection[int]) -> int:
    """Of these records, delete the erased ones that nothing refers to any more (their alerts,
    answers and help messages were forgotten): their bare rows were kept only for those.
    Returns how many went."""
    dropped = 0
    ids = sorted(set(citizen_ids))
    for start in range(0, len(ids), _BARE_A_STATEMENT):
        result = session.execute(
            delete(Citizen).where(
                Citizen.id.in_(ids[start : start + _BARE_A_STATEMENT]),
                Citizen.status == "erased",
                *_nothing_refers_to(Citizen.id),
            )
        )
        dropped += result.rowcount or 0
    return dropped


_BARE_A_STATEMENT = 5_000
# An erased record nothing names goes this long after its erasure, looked at for this long
# (an hourly job: each is looked at many times).
_BARE_AFTER = timedelta(days=1)
_BARE_LOOKED_AT = timedelta(days=2)


def _nothing_refers_to(citizen_id: ColumnElement[int]) -> list[ColumnElement[bool]]:
    return [
        ~select(table.id).where(table.citizen_id == citizen_id).exists()
        for table in (Alert, Checkin, CheckinAnswer, HelpMessage)
    ]


# An hourly job: the provider ids recorded after an erasure of the last two days are cleared.
_REFS_FORGOTTEN_WITHIN = timedelta(days=2)


# A record that verified once, then lost its every contact (another record verified its
# number: the way back to a lost token) and asked for no code since, is nobody's: erased after
# this long (the bare row stays for its alerts and answers), not kept for ever.
ORPHAN_KEPT = timedelta(days=30)
_ORPHANS_A_RUN = 1_000


def _erase_orphans(session: Session, *, now: datetime) -> int:
    cutoff = now - ORPHAN_KEPT
    asked = select(ContactCode.id).where(
        ContactCode.citizen_id == Citizen.id, ContactCode.sent_at >= cutoff
    )
    orphans = session.scalars(
        select(Citizen)
        .where(
            Citizen.status == "active",
            Citizen.verified_at.is_not(None),
            Citizen.phone_hash.is_(None),
            Citizen.email_hash.is_(None),
            Citizen.updated_at < cutoff,
            ~asked.exists(),
        )
        .limit(_ORPHANS_A_RUN)
    ).all()
    for citizen in orphans:
        erase_citizen(session, citizen=citizen)
    return len(orphans)


def codes_to_send(
    session: Session,
    limits: RateLimits,
    outgoing: Outgoing,
    *,
    countries: Sequence[str],
    client: str,
    proven: bool = False,
) -> Outgoing:
    """What of `outgoing` may be sent. Each new contact's limits (its cooldown, and the
    destination's) are taken in the request's transaction: a code they hold is marked so
    (verification.hold: it can verify nothing, and a try at it does not count against the
    contact) and is not sent; so is one to a number outside the allowed `countries`
    (ANJEON_CODE_COUNTRIES), before any limit is taken, and one by SMS to a number that
    replied STOP, after its limits are taken as for any other number (a probe told STOPped
    numbers from others by the resend limit they had left). The rest go with their limits
    taken.
    Registration answers the same either way. `client`: the address that asked;
    `proven`: a proof of work admitted the request, and its codes draw on their own pool
    (RateLimits.take_new_contact)."""
    codes = []
    for code in outgoing.codes:
        if not messages.to_allowed_country(code, countries):
            verification.hold(session, code)
            continue
        try:
            limits.take_new_contact(
                code.channel,  # type: ignore[arg-type]
                code.address,
                proven=proven,
                client=client,
            )
        except TooManyRequests as exc:
            log.warning(
                "code held by a rate limit", extra={"channel": code.channel, "rule": exc.rule}
            )
            verification.hold(session, code)
            continue
        if not proven and code.asked_from is None:  # a registration's is in its INSERT
            count_as_unverified(session, limits, code, client=client)
        if hold_if_stopped(session, code):
            continue
        codes.append(code)
    return Outgoing(codes=codes, notices=outgoing.notices)


def unverified_shares(limits: RateLimits, client: str, *, proven: bool) -> dict[str, str]:
    """The share of unverified codes each channel's code of a request from `client` takes
    (rate_limit_client_unverified; none when a proof of work admitted it), to keep with it."""
    return {} if proven else {ch: limits.unverified_key(ch, client) for ch in ("sms", "email")}


def count_as_unverified(
    session: Session, limits: RateLimits, code: verification.CodeToSend, *, client: str
) -> None:
    """The code, sent with its limits taken in the plain pool, took `client`'s network's share
    of unverified codes (rate_limit_client_unverified): kept with it, to give back once it is
    verified. A proven request's code takes no such share."""
    verification.remember_asker(session, code, limits.unverified_key(code.channel, client))


def find_citizen(session: Session, *, public_id: str, token: str) -> Citizen:
    """The citizen the token manages; 404 for a wrong token, so ids cannot be probed."""
    # No id has a NUL, and PostgreSQL refuses one in a text parameter.
    query = select(Citizen).where(Citizen.public_id == public_id)
    citizen = None if "\x00" in public_id else session.scalar(query)
    _check_token(citizen.token_hash if citizen else None, token)
    assert citizen is not None
    return citizen


def check_manage_token(session: Session, *, public_id: str, token: str) -> None:
    """find_citizen's refusal alone, loading no citizen: a request checks it before it geocodes
    an address (a stranger's request is refused without spending the geocoder's turns)."""
    query = select(Citizen.token_hash).where(Citizen.public_id == public_id)
    _check_token(None if "\x00" in public_id else session.scalar(query), token)


def _check_token(stored: str | None, token: str) -> None:
    if stored is None or not hmac.compare_digest(stored, token_hash(token)):
        raise NotFound("no citizen with this id for this token")


def update_citizen(
    session: Session,
    *,
    registry: Registry,
    citizen: Citizen,
    data: CitizenUpdate,
    places: Places,
    verified: bool = False,
) -> Outgoing:
    """Change what the body gives; new stays come resolved in `places` (from locate()). A new
    contact is alerted only once verified: its code is returned for the caller to send."""
    if places.stays is not None:
        _refuse_ended_stays_not_stored(citizen, places.stays)
    given = data.model_fields_set
    current = read_contacts(registry, citizen, pending=session)
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
    citizen.wants_sms, citizen.wants_email = "sms" in channels, "email" in channels
    if "quiet_hours" in given:
        _set_quiet_hours(citizen, data.quiet_hours)
    if data.exercises is not None:
        citizen.exercises = data.exercises
    if data.stays is not None:
        assert places.stays is not None
        citizen.places = [p for p in citizen.places if p.kind == "current"] + places.stays
    now = utcnow()
    citizen.updated_at = now
    outgoing = _new_contacts(
        session, registry, citizen, contacts, current, verified=verified, now=now
    )
    session.flush()
    geomatch.match_citizen(session, citizen_id=citizen.id, now=now)
    return outgoing


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
    # The record first, then their check-ins in advisory order, as every writer of an answer
    # locks them (checkin.answers.answering): an answer given at the same moment lands before
    # (and its words are taken here) or finds the record erased. The other way round, a page
    # adding words deadlocked with this, and a probe's answers kept words after the 204.
    # Read again once locked: a contact verified while this waited must be seen to be erased
    # (a review's erasure, loaded before, left a phone just verified on the erased record).
    session.scalars(
        select(Citizen)
        .where(Citizen.id == citizen.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    session.execute(
        select(Checkin.id)
        .where(Checkin.citizen_id == citizen.id)
        .order_by(Checkin.advisory_id)
        .with_for_update()
    ).all()
    citizen.status = "erased"
    citizen.erased_at = citizen.updated_at = utcnow()
    for column in ("name_sealed", "phone_sealed", "phone_hash", "email_sealed", "email_hash"):
        setattr(citizen, column, None)
    citizen.token_hash = None
    citizen.notify_sms = citizen.notify_email = False
    citizen.wants_sms = citizen.wants_email = False
    # When they asked for help, said STOP, chose quiet hours or drills: theirs, gone too.
    citizen.duty_paged_at = citizen.duty_drill_paged_at = citizen.sms_opted_out_at = None
    citizen.quiet_from, citizen.quiet_to = QUIET_HOURS_DEFAULT
    citizen.exercises = False
    citizen.places = []
    session.execute(delete(ContactCode).where(ContactCode.citizen_id == citizen.id))
    # Their own words to a check-in go too; the answers stay (the roll call counted them), and
    # a help notice not yet sent has nothing left to tell.
    session.execute(
        update(CheckinAnswer)
        .where(CheckinAnswer.citizen_id == citizen.id)
        .values(note_sealed=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Checkin)
        .where(Checkin.citizen_id == citizen.id, Checkin.duty_notified_at.is_(None))
        .values(duty_notified_at=citizen.erased_at)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(HelpMessage)
        .where(HelpMessage.citizen_id == citizen.id)
        .values(
            note_sealed=None,
            duty_notified_at=func.coalesce(HelpMessage.duty_notified_at, citizen.erased_at),
        )
        .execution_options(synchronize_session=False)
    )
    session.flush()
    geomatch.cancel_pending_for(session, citizen_id=citizen.id)


def channels_of(citizen: Citizen) -> list[str]:
    """The channels the citizen chose (each alerted once its contact is verified)."""
    return [name for name, on in (("sms", citizen.wants_sms), ("email", citizen.wants_email)) if on]


def verified_channels(citizen: Citizen) -> list[str]:
    return [
        name
        for name, sealed in (("sms", citizen.phone_sealed), ("email", citizen.email_sealed))
        if sealed is not None
    ]


def public_status(citizen: Citizen) -> str:
    """ "pending" until one contact is verified, then "active" (or "erased")."""
    if citizen.status == "active" and not verified_channels(citizen):
        return "pending"
    return citizen.status


def read_contacts(
    registry: Registry, citizen: Citizen, *, pending: Session | None = None
) -> Contacts:
    """The verified contacts; with `pending` (a session), a contact still waiting for its code
    stands in where none is verified."""
    vault = registry.vault
    phone = vault.read("phone", citizen.phone_sealed)
    email = vault.read("email", citizen.email_sealed)
    if pending is not None and (phone is None or email is None):
        for row in pending.scalars(select(ContactCode).where(ContactCode.citizen_id == citizen.id)):
            opened = vault.read(verification.CHANNEL_FIELD[row.channel], row.contact_sealed)
            if row.channel == "sms" and phone is None:
                phone = opened
            elif row.channel == "email" and email is None:
                email = opened
    return Contacts(phone=phone, email=email)


def masked_contacts(registry: Registry, citizen: Citizen) -> Contacts:
    """Contacts as staff see them: +82******5678, j***@example.com."""
    found = read_contacts(registry, citizen)
    shown = (None, UNREADABLE)  # as they are
    return Contacts(
        phone=found.phone if found.phone in shown else contact.mask_phone(found.phone),
        email=found.email if found.email in shown else contact.mask_email(found.email),
    )


def to_read(registry: Registry, citizen: Citizen, session: Session) -> CitizenRead:
    contacts = read_contacts(registry, citizen, pending=session)
    current = next((p for p in citizen.places if p.kind == "current"), None)
    return CitizenRead(
        id=citizen.public_id,
        status=public_status(citizen),
        verified=verified_channels(citizen),
        pending=verification.pending_channels(session, citizen.id),
        name=registry.vault.read("name", citizen.name_sealed) or "",
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
        quiet_hours=_quiet_hours(citizen),
        exercises=citizen.exercises,
        sms_opted_out=citizen.sms_opted_out_at is not None,
        created_at=citizen.created_at,
        updated_at=citizen.updated_at,
    )


def _set_quiet_hours(citizen: Citizen, quiet: QuietHours | None) -> None:
    # null(), not None: on a new row the ORM would take None as "unset" and store the default.
    citizen.quiet_from = quiet.starts if quiet else null()  # type: ignore[assignment]
    citizen.quiet_to = quiet.ends if quiet else null()  # type: ignore[assignment]


def _quiet_hours(citizen: Citizen) -> QuietHours | None:
    if not citizen.quiet_from or not citizen.quiet_to:
        return None
    return QuietHours(starts=citizen.quiet_from, ends=citizen.quiet_to)


def _check_contacts(
    registry: Registry,
    phone: str | None,
    email: str | None,
    channels: list[str],
    *,
    known: Contacts | None = None,
) -> Contacts:
    """Normalise new contacts and check each chosen channel has one; all problems at once."""
    new_phone, new_email, errors = _normalised(registry, phone, email)
    final = Contacts(
        phone=new_phone or (known.phone if known else None),
        email=new_email or (known.email if known else None),
    )
    if not errors:
        if "sms" in channels and final.phone is None:
            errors.append(FieldError("channels", "sms needs a phone number"))
        elif (
            # A number given is sent a code whatever the channels (a contact given but not
            # chosen is verified all the same): a probe had codes texted to premium-rate
            # numbers and landlines by leaving sms out of the channels.
            ("sms" in channels or new_phone is not None)
            # A stored number no listed secret opens stays as it is (unchanged to _new_contacts):
            # refusing it refused every update, a trip added too (a review).
            and final.phone != UNREADABLE
            and not contact.can_receive_sms(final.phone or "")
        ):
            errors.append(FieldError("phone", "this number cannot receive SMS (landline?)"))
        if "email" in channels and final.email is None:
            errors.append(FieldError("channels", "email needs an e-mail address"))
    if errors:
        raise InvalidInput.of(errors)
    return final


def _normalised(
    registry: Registry, phone: str | None, email: str | None
) -> tuple[str | None, str | None, list[FieldError]]:
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
    return new_phone, new_email, errors


def _new_contacts(
    session: Session,
    registry: Registry,
    citizen: Citizen,
    contacts: Contacts,
    before: Contacts,
    *,
    verified: bool,
    now: datetime,
    fresh: bool = False,
    shares: Mapping[str, str] | None = None,
) -> Outgoing:
    """Contacts that are new or changed wait for their code (or, `verified`, count at once);
    a removed one goes at once; the alerted channels follow what is verified. `fresh`: a record
    just inserted, with no contact to drop and no code to replace (no DELETE that finds
    nothing, no UPDATE that changes nothing)."""
    codes: list[verification.CodeToSend] = []
    notices: list[verification.Notice] = []
    for channel, new, old in (
        ("sms", contacts.phone, before.phone),
        ("email", contacts.email, before.email),
    ):
        if new == old and new is not None:
            continue  # unchanged (verified, or still waiting for its code)
        if not fresh:
            _drop_contact(session, citizen, channel)
        if new is None:
            continue
        given = {"vault": registry.vault, "citizen": citizen, "channel": channel, "address": new}
        if verified:
            notices += verification.mark_verified(session, now=now, **given)
        else:
            asked_from = (shares or {}).get(channel)
            codes.append(
                verification.issue_code(
                    session, now=now, replaces=not fresh, asked_from=asked_from, **given
                )
            )
    citizen.notify_sms = citizen.wants_sms and citizen.phone_sealed is not None
    citizen.notify_email = citizen.wants_email and citizen.email_sealed is not None
    return Outgoing(codes=codes, notices=notices)


def _drop_contact(session: Session, citizen: Citizen, channel: str) -> None:
    if channel == "sms":
        citizen.phone_sealed = citizen.phone_hash = None
        citizen.sms_opted_out_at = None  # the STOP stays with the number (sms_opt_out)
    else:
        citizen.email_sealed = citizen.email_hash = None
    session.execute(
        delete(ContactCode).where(
            ContactCode.citizen_id == citizen.id, ContactCode.channel == channel
        )
    )


def _current_place(registry: Registry, location: LocationIn, *, field: str) -> CitizenPlace:
    place = resolve_place(location, field=field, geocoder=registry.geocoder)
    return CitizenPlace(
        kind="current", source=place.source, lat=place.lat, lon=place.lon, country=place.country
    )


def _refuse_ended_stays_not_stored(citizen: Citizen, stays: list[CitizenPlace]) -> None:
    """A stay that has ended may come back only as it is stored: a page sends back every stay
    it read (ended ones are kept ANJEON_STAY_RETENTION_DAYS), and refusing them kept a citizen
    from adding a trip for a month. A new one is refused, as at registration."""
    earliest = earliest_date(utcnow())
    stored = {_stay_key(p) for p in citizen.places if p.kind == "stay"}
    for i, place in enumerate(stays):
        if (
            place.ends_on is not None
            and place.ends_on < earliest
            and _stay_key(place) not in stored
        ):
            raise InvalidInput(f"stays[{i}].to", "this stay has already ended")


def _stay_key(place: CitizenPlace) -> tuple:
    where = (place.country,) if place.lat is None else (round(place.lat, 6), round(place.lon, 6))
    return (place.starts_on, place.ends_on, *where)


def _stay_places(
    registry: Registry, stays: list[StayIn], *, ended_ok: bool = False
) -> list[CitizenPlace]:
    # Checked before any address is geocoded.
    if len(stays) > registry.max_stays:
        raise InvalidInput("stays", f"at most {registry.max_stays} stays")
    # A stay's dates are its traveller's calendar: one ending today in Los Angeles is still
    # on after midnight UTC.
    earliest = earliest_date(utcnow())
    places = []
    errors: list[FieldError] = []
    for i, stay in enumerate(stays):
        # An ended stay may come back only as stored, and stored ones are read back as points.
        if stay.ends_on < earliest and (not ended_ok or stay.address is not None):
            errors.append(FieldError(f"stays[{i}].to", "this stay has already ended"))
            continue
        try:
            place = resolve_place(stay, field=f"stays[{i}]", geocoder=registry.geocoder)
        except InvalidInput as refused:
            errors += refused.errors
            continue
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
    if errors:
        raise InvalidInput.of(errors)
    return places
