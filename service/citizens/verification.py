"""Verified contacts: a contact is alerted only once its owner typed the 6-digit code sent to
it. Codes are stored as keyed hashes, live 10 minutes, allow 5 wrong tries and are compared in
constant time. A verified contact moves onto the citizen row, taking it from any other record
that held it: a contact belongs to the record that verified it last."""

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from service.citizens.models import Citizen, ContactCode
from service.db import hold_name_lock
from service.dispatch.sms_opt_out import stopped_at
from service.errors import InvalidInput
from service.privacy import UNREADABLE, PersonalDataVault

CODE_LIFE = timedelta(minutes=10)
MAX_TRIES = 5
CHANNEL_FIELD = {"sms": "phone", "email": "email"}


@dataclass(frozen=True)
class CodeToSend:
    """A code for the router to send once the transaction has committed (never inside it)."""

    channel: str
    address: str
    code: str
    language: str
    code_id: int = 0  # its ContactCode row
    contact_hash: str = ""  # the address's keyed hash (the registry's blind index)
    asked_from: str | None = None  # as the row holds it (ContactCode.asked_from)


@dataclass(frozen=True)
class Notice:
    """A message to a record's remaining contact that one of its contacts moved elsewhere."""

    channel: str
    address: str
    language: str


@dataclass(frozen=True)
class Checked:
    """The outcome of a typed code: verified, or why not (the wrong try is counted either way)."""

    verified: bool
    problem: str = ""
    notices: tuple[Notice, ...] = ()
    # Verified: the client network whose share of unverified codes the code took (keyed), and
    # when it was sent, for the share to be given back.
    asked_from: str | None = None
    sent_at: datetime | None = None


def contact_hash(vault: PersonalDataVault, channel: str, address: str) -> str:
    field = CHANNEL_FIELD[channel]
    return vault.lookup_hash(field, address.lower() if channel == "email" else address)


def issue_code(
    session: Session,
    *,
    vault: PersonalDataVault,
    citizen: Citizen,
    channel: str,
    address: str,
    now: datetime,
    replaces: bool = True,
    asked_from: str | None = None,
) -> CodeToSend:
    """A new code for `address` on `channel`, replacing any earlier one for the channel (with
    `replaces` False, the caller knows there is none: a record inserted in this transaction).
    `asked_from`: the share of unverified codes it takes, when known before its limits are
    (remember_asker otherwise), kept in the INSERT."""
    code = f"{secrets.randbelow(1_000_000):06d}"
    if replaces:
        session.execute(
            delete(ContactCode).where(
                ContactCode.citizen_id == citizen.id, ContactCode.channel == channel
            )
        )
    row = ContactCode(
        citizen_id=citizen.id,
        channel=channel,
        contact_sealed=vault.seal(CHANNEL_FIELD[channel], address),
        contact_hash=contact_hash(vault, channel, address),
        code_hash=_code_hash(vault, citizen.id, channel, code),
        tries=0,
        expires_at=now + CODE_LIFE,
        sent_at=now,
        asked_from=asked_from,
    )
    session.add(row)
    session.flush()
    return CodeToSend(
        channel=channel,
        address=address,
        code=code,
        language=citizen.language,
        code_id=row.id,
        contact_hash=row.contact_hash,
        asked_from=asked_from,
    )


def restart_code(session: Session, *, citizen_id: int, channel: str, now: datetime) -> None:
    """The code waiting on `channel` starts afresh, unsent: no tries taken, a full life. What
    a resend its contact's limit turned away leaves, so that nothing tells it from a renewed
    code (the contact's own tries still bound the guesses)."""
    session.execute(
        update(ContactCode)
        .where(ContactCode.citizen_id == citizen_id, ContactCode.channel == channel)
        .values(tries=0, expires_at=now + CODE_LIFE)
        .execution_options(synchronize_session=False)
    )


def remember_asker(session: Session, code: CodeToSend, kept: str) -> None:
    """The code took the share of unverified codes of the client network `kept` (its keyed
    hash): given back when it is verified."""
    session.execute(
        update(ContactCode).where(ContactCode.id == code.code_id).values(asked_from=kept)
    )


def hold(session: Session, code: CodeToSend, *, for_stop: bool = False) -> None:
    """The code will not be sent (the contact's cooldown, or `for_stop`: the number said STOP
    and its limits were taken as for a sent code): it can verify nothing."""
    session.execute(
        update(ContactCode)
        .where(ContactCode.id == code.code_id)
        .values(held=True, held_for_stop=for_stop)
    )


# A contact waiting for its code that no listed data secret opens (a secret dropped before
# `anjeon reseal` was done): a 500 before; the citizen mends it by giving the contact again.
UNREADABLE_WAITING = "the contact waiting for its code cannot be read: give it again"


def waiting_address(
    session: Session, *, vault: PersonalDataVault, citizen: Citizen, channel: str
) -> str | None:
    """The contact waiting for its code on `channel`; None when none is waiting."""
    waiting = _waiting(session, citizen.id, channel)
    if waiting is None:
        return None
    if not vault.opens(CHANNEL_FIELD[channel], waiting.contact_sealed):
        raise InvalidInput(CHANNEL_FIELD[channel], UNREADABLE_WAITING)
    return vault.open(CHANNEL_FIELD[channel], waiting.contact_sealed)


def check_code(
    session: Session,
    *,
    vault: PersonalDataVault,
    citizen: Citizen,
    channel: str,
    code: str,
    now: datetime,
    count_try: Callable[[str], None],
    check_tries: Callable[[str], None],
    forget_tries: Callable[[str], None],
) -> Checked:
    """Compare a typed code. Right: the contact moves onto the citizen (and off any other
    record), and its tries are forgotten (`forget_tries`). Wrong: the try is counted (the
    caller commits it even though it answers 422). `count_try` takes the contact's lookup hash
    before the comparison and raises when that contact had too many tries, whatever the record
    or the code (a limit across processes). A code never sent (held) verifies nothing; a try at
    it is checked against that limit (`check_tries`, which raises as `count_try` would) without
    spending it."""
    # The record before its code, as an erasure locks them (a review: the code's try locked,
    # then the record, deadlocked with an erasure at the same moment).
    session.execute(select(Citizen.id).where(Citizen.id == citizen.id).with_for_update())
    waiting = _waiting(session, citizen.id, channel)
    if waiting is None:
        return Checked(False, "no code is waiting for this channel: ask for a new one")
    if not vault.opens(CHANNEL_FIELD[channel], waiting.contact_sealed):
        return Checked(False, UNREADABLE_WAITING)  # no try spent: no code can verify it
    if waiting.tries >= MAX_TRIES or waiting.expires_at <= now:
        return Checked(False, "this code is no longer valid: ask for a new one")
    if waiting.held:
        # Answered as a wrong code, and refused as any code once the contact's tries are
        # spent (`check_tries`), so nothing tells a caller the contact was asked elsewhere;
        # counted on this code alone. A code held because the number said STOP counts as a
        # sent code's tries do: a probe told STOPped numbers apart by tries that never ran out
        # (and its owner can get no code until START anyway).
        if waiting.held_for_stop:
            count_try(waiting.contact_hash)
        else:
            check_tries(waiting.contact_hash)
        tries = _take_try(session, waiting.id) or MAX_TRIES
        return _wrong(tries)
    count_try(waiting.contact_hash)
    # The try is taken before the comparison, in one statement that the database serialises:
    # requests racing on one code (in any process) each read `tries` before any wrote it, so
    # a count read, compared and written back would let them all compare.
    tries = _take_try(session, waiting.id)
    if tries is None:
        return Checked(False, "this code is no longer valid: ask for a new one")
    typed = code.strip()
    expected = _code_hash(vault, citizen.id, channel, typed)
    if not hmac.compare_digest(expected, waiting.code_hash):
        return _wrong(tries)
    address = vault.open(CHANNEL_FIELD[channel], waiting.contact_sealed)
    stopped = _stopped_elsewhere(session, channel, waiting.contact_hash)
    notices = _take_from_others(
        session, vault=vault, citizen=citizen, channel=channel, hashed=waiting.contact_hash, now=now
    )
    _apply(vault, citizen, channel, address, hashed=waiting.contact_hash, stopped=stopped, now=now)
    citizen.updated_at = now
    session.delete(waiting)
    session.flush()
    forget_tries(waiting.contact_hash)
    return Checked(
        True, notices=tuple(notices), asked_from=waiting.asked_from, sent_at=waiting.sent_at
    )


def _wrong(tries: int) -> Checked:
    left = MAX_TRIES - tries
    if left == 0:
        return Checked(False, "wrong code; no tries are left: ask for a new one")
    return Checked(False, f"wrong code; {left} {'try' if left == 1 else 'tries'} left")


def _take_try(session: Session, code_id: int) -> int | None:
    """Count one try at the code; its tries so far, or None when none was left (or it went)."""
    return session.execute(
        update(ContactCode)
        .where(ContactCode.id == code_id, ContactCode.tries < MAX_TRIES)
        .values(tries=ContactCode.tries + 1)
        .returning(ContactCode.tries)
        .execution_options(synchronize_session="fetch")
    ).scalar()


def mark_verified(
    session: Session,
    *,
    vault: PersonalDataVault,
    citizen: Citizen,
    channel: str,
    address: str,
    now: datetime,
) -> list[Notice]:
    """Verification off (development, demos): the contact is taken as verified at once."""
    hashed = contact_hash(vault, channel, address)
    stopped = _stopped_elsewhere(session, channel, hashed)
    notices = _take_from_others(
        session, vault=vault, citizen=citizen, channel=channel, hashed=hashed, now=now
    )
    _apply(vault, citizen, channel, address, hashed=hashed, stopped=stopped, now=now)
    return notices


def pending_channels(session: Session, citizen_id: int) -> list[str]:
    return sorted(
        session.scalars(select(ContactCode.channel).where(ContactCode.citizen_id == citizen_id))
    )


def _waiting(session: Session, citizen_id: int, channel: str) -> ContactCode | None:
    return session.scalar(
        select(ContactCode).where(
            ContactCode.citizen_id == citizen_id, ContactCode.channel == channel
        )
    )


def _code_hash(vault: PersonalDataVault, citizen_id: int, channel: str, code: str) -> str:
    return vault.lookup_hash("verification-code", f"{citizen_id}:{channel}:{code}")


def said_stop(session: Session, code: CodeToSend) -> bool:
    """The code would go by SMS to a number that replied STOP: it is not sent (carriers refuse
    it in the US and Canada, and elsewhere it is a text the number asked not to get)."""
    return _stopped_elsewhere(session, code.channel, code.contact_hash) is not None


def _stopped_elsewhere(session: Session, channel: str, hashed: str) -> datetime | None:
    """When the number replied STOP, on any record or none (None: it did not)."""
    if channel != "sms":
        return None
    return stopped_at(session, hashed)


def _apply(
    vault: PersonalDataVault,
    citizen: Citizen,
    channel: str,
    address: str,
    *,
    hashed: str,
    stopped: datetime | None,
    now: datetime,
) -> None:
    citizen.verified_at = citizen.verified_at or now
    if channel == "sms":
        if hashed != citizen.phone_hash:
            # STOP belongs to the number, not the record: a new number starts as its own
            # STOP left it (sms_opt_out), else opted in.
            citizen.sms_opted_out_at = stopped
        citizen.phone_sealed, citizen.phone_hash = vault.seal("phone", address), hashed
        citizen.notify_sms = citizen.wants_sms
    else:
        citizen.email_sealed, citizen.email_hash = vault.seal("email", address), hashed
        citizen.notify_email = citizen.wants_email


def _take_from_others(
    session: Session,
    *,
    vault: PersonalDataVault,
    citizen: Citizen,
    channel: str,
    hashed: str,
    now: datetime,
) -> list[Notice]:
    """The contact leaves whichever record verified it before; that record's other verified
    contact, if it has one, is told (it may be a lost phone, or someone's mistake)."""
    # Two records verifying one contact at once (one person's double sign-up): each would
    # find nobody holding it, and the second's write broke the unique key (a 500, a probe).
    # The second now waits for the first, then takes it from it.
    hold_name_lock(session, f"contact:{hashed}")
    column = Citizen.phone_hash if channel == "sms" else Citizen.email_hash
    others = session.scalars(select(Citizen).where(column == hashed, Citizen.id != citizen.id))
    notices = []
    for other in others:
        if channel == "sms":
            other.phone_sealed = other.phone_hash = None
            other.notify_sms = False
        else:
            other.email_sealed = other.email_hash = None
            other.notify_email = False
        other.updated_at = now
        remaining = (
            ("email", other.email_sealed) if channel == "sms" else ("sms", other.phone_sealed)
        )
        if remaining[0] == "sms" and other.sms_opted_out_at is not None:
            continue  # the number said STOP: nothing more is texted to it (a probe's finding)
        # Not told where no listed secret opens it: that must not hold up this verification.
        told_at = vault.read(CHANNEL_FIELD[remaining[0]], remaining[1])
        if told_at is not None and told_at != UNREADABLE:
            notices.append(Notice(channel=remaining[0], address=told_at, language=other.language))
    # Free the unique key before this record takes the contact.
    session.flush()
    return notices
