"""Telling the duty staff of a citizen who answered "I need help": at once, with whatever lets
them reach the person (name, contacts, where they are, what they wrote). The notice is sent
after the answer's transaction commits; the answer row remembers whether it went, and the
minute job sends any that did not (a crash or a mail relay down loses none)."""

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import httpx
from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from service.advisories.models import Advisory
from service.audit import actors
from service.audit import service as audit
from service.checkin.answers import (
    HELP_MESSAGE_QUIET,
    last_paged,
    mark_duty_told,
    mark_help_message_told,
)
from service.checkin.models import Checkin, CheckinAnswer, HelpMessage
from service.citizens.models import Citizen, CitizenPlace, established, is_established
from service.config import Settings
from service.db import UTCDateTime
from service.dispatch.notifiers.base import Notifier, OutgoingMessage, Sent, revealed
from service.dispatch.notifiers.webhook import post_signed_json
from service.errors import ServiceUnavailable, TooManyRequests
from service.privacy import UNREADABLE, PersonalDataVault, scrub_contacts
from service.rate_limits import RateLimits, Rule

log = logging.getLogger("anjeon.checkin.duty")
# A check-in help within repage_after (below) of the last page about the citizen waits for the
# minute job (answering 1, 2, 1, 2 … must not page the duty staff at every 2; nothing is
# dropped). The gap is REPAGE_AFTER for the day's first help and doubles with each help since,
# up to REPAGE_MOST: a leaked check-in link toggled for its 7 days pages about 24 times a day,
# not 288. The console shows every answer at once; a page only calls the staff to it.
REPAGE_AFTER = timedelta(minutes=5)
REPAGE_MOST = timedelta(hours=1)
_HELPS_COUNTED_FOR = timedelta(days=1)
ACTOR = f"{actors.SYSTEM}duty-notice"
# Past the hour's notices one by one (rate_limit_duty_page, for the whole service), the rest
# go together in a summary, at most one every 10 minutes (Rule.DUTY_SUMMARY): a crisis, or a
# script's many verified records crying for help, must not bury the duty staff under a mail
# each. A summary names each citizen and advisory; the console has the rest. It lists this
# many, and counts the others.
SUMMARY_LISTED = 50


@dataclass(frozen=True)
class AskedBy:
    """An advisory whose check-in the help answer answered."""

    advisory_id: str
    title: str
    level: str


@dataclass(frozen=True)
class DutyNotice:
    """One notice per citizen in need: an SMS answers every open check-in, so one "2" under
    two advisories is one person to call, not two notices."""

    citizen_id: str
    name: str
    phone: str | None
    email: str | None
    language: str
    place: str
    channel: str
    note: str
    answered_at: datetime
    # Empty: a HelpMessage, asked by no check-in.
    advisories: tuple[AskedBy, ...] = ()
    checkin_ids: tuple[int, ...] = ()
    exercise: bool = False  # a drill: said first, so nobody takes it for real (or the reverse)
    help_message_ids: tuple[int, ...] = ()
    # A safe pressed on their check-in page since (the help stays: a link can be forwarded).
    safe_said_at: datetime | None = None
    # Fields holding a value that no listed data secret opens (shown as UNREADABLE).
    unreadable: tuple[str, ...] = ()
    established: bool = True  # else a new record with no verified phone (models.ESTABLISHED_AFTER)

    def text(self) -> str:
        if not self.advisories:
            asked = ["Advisory: none. No check-in was open for them: they wrote on their own."]
        elif len(self.advisories) == 1:
            asked = [f"Advisory: {_advisory_line(self.advisories[0])}"]
        else:
            asked = [
                f"Advisories ({len(self.advisories)}; their one answer counts for each):",
                *(f"- {_advisory_line(each)}" for each in self.advisories),
            ]
        return "\n".join(
            [
                *(["[EXERCISE] This is a drill, not a real emergency."] if self.exercise else []),
                "A citizen answered the safety check-in: NEED HELP."
                if self.advisories
                else "A registered citizen texted: NEED HELP.",
                "",
                *(
                    []
                    if self.established
                    else [
                        "Record: new, with no verified phone. Anyone can make one with an"
                        " e-mail inbox: weigh this cry with that in mind."
                    ]
                ),
                f"Name: {self.name or '(not given)'}",
                f"Phone: {self.phone or '-'}",
                f"E-mail: {self.email or '-'}",
                f"Language: {self.language}",
                f"Where: {self.place}",
                f"Answered: {self.answered_at.isoformat()} by {self.channel}",
                *(
                    [
                        f"Since then: 'safe' pressed on their check-in page at "
                        f"{self.safe_said_at.isoformat()}. A link can be forwarded: reach "
                        "them to confirm, then close the case in the roll call."
                    ]
                    if self.safe_said_at
                    else []
                ),
                "",
                *asked,
                f"Citizen record: {self.citizen_id}",
                "This notice is recorded in the audit log.",
                "",
                *self._words(),
            ]
        )

    def subject(self, sender: str) -> str:
        drill = "[EXERCISE] " if self.exercise else ""
        # No name in the subject: it shows in every inbox list, lock screen and mail relay log.
        return f"{drill}[{sender}] NEED HELP: citizen {self.citizen_id[:8]}"

    def _words(self) -> list[str]:
        """The citizen's own words last, each line quoted: whoever holds their link writes
        them, and a line of theirs must not pass for one of the notice's ("UPDATE FROM
        CONSULATE: call them at … instead", as a probe wrote)."""
        if not self.note:
            return ["Their words: none."]
        lines = self.note.splitlines() or [self.note]
        return [
            "Their words, as they wrote them (unverified):",
            *(f"> {line}" for line in lines),
        ]

    def payload(self) -> dict[str, object]:
        first = self.advisories[0] if self.advisories else None
        return {
            "event": "checkin.help" if self.advisories else "citizen.help",
            # The first (most recent) advisory and its check-in, as before several were told
            # in one notice; `advisories` and `checkin_ids` list them all.
            "checkin_id": self.checkin_ids[0] if self.checkin_ids else None,
            "checkin_ids": list(self.checkin_ids),
            "help_message_id": self.help_message_ids[0] if self.help_message_ids else None,
            "help_message_ids": list(self.help_message_ids),
            "citizen_id": self.citizen_id,
            "established": self.established,
            "advisory_id": first.advisory_id if first else None,
            "advisory_title": first.title if first else "",
            "level": first.level if first else "",
            "advisories": [
                {"id": each.advisory_id, "title": each.title, "level": each.level}
                for each in self.advisories
            ],
            # A value no listed data secret opens is not passed on as if it were one (a
            # receiver may dial `phone`): empty, and named in `unreadable`. Words of which
            # only some open keep the marker in their place.
            "name": "" if "name" in self.unreadable else self.name,
            "phone": None if "phone" in self.unreadable else self.phone,
            "email": None if "email" in self.unreadable else self.email,
            "language": self.language,
            "place": self.place,
            "channel": self.channel,
            "note": "" if self.note == UNREADABLE and "note" in self.unreadable else self.note,
            "unreadable": list(self.unreadable),
            "answered_at": self.answered_at.isoformat(),
            "safe_said_at": self.safe_said_at.isoformat() if self.safe_said_at else None,
            "exercise": self.exercise,
        }


@dataclass(frozen=True)
class Waiting:
    """One citizen in a summary: who, under which advisory (None: a help message), when."""

    citizen_id: str
    advisory_id: str | None
    level: str
    exercise: bool
    answered_at: datetime
    checkin_ids: tuple[int, ...] = ()
    help_message_ids: tuple[int, ...] = ()
    established: bool = True  # else a record anyone can make (models.ESTABLISHED_AFTER)


@dataclass(frozen=True)
class DutySummary:
    """Citizens in need not told of one by one (past the hour's notices, or past the part of
    them that new records anyone can make may have): ids only, no personal data (the console's
    roll calls and help messages show them, and reveal who they are)."""

    waiting: tuple[Waiting, ...]
    console: str

    @property
    def exercise(self) -> bool:
        return all(each.exercise for each in self.waiting)

    @property
    def citizens(self) -> int:
        """How many people: one with help answers and help messages is two lines, one person."""
        return len({each.citizen_id for each in self.waiting})

    def subject(self, sender: str) -> str:
        drill = "[EXERCISE] " if self.exercise else ""
        people = "1 citizen" if self.citizens == 1 else f"{self.citizens} citizens"
        return f"{drill}[{sender}] NEED HELP: {people} (summary)"

    def text(self) -> str:
        lines = []
        for each in self.waiting[:SUMMARY_LISTED]:
            drill = " [EXERCISE]" if each.exercise and not self.exercise else ""
            asked = (
                f"advisory {each.advisory_id} (level {each.level}){drill}"
                if each.advisory_id
                else "a help message, no check-in open"
            )
            new = "" if each.established else " (a new record with no verified phone)"
            lines.append(
                f"- citizen {each.citizen_id}: {asked}, {each.answered_at.isoformat()}{new}"
            )
        more = len(self.waiting) - SUMMARY_LISTED
        return "\n".join(
            [
                *(["[EXERCISE] This is a drill, not a real emergency."] if self.exercise else []),
                f"{self.citizens} citizens asked for help whom the duty staff are not told of"
                " one by one: more asked this hour than ANJEON_RATE_LIMIT_DUTY_PAGE allows, or,"
                " for new records with no verified phone (anyone can make one), than"
                " ANJEON_RATE_LIMIT_DUTY_PAGE_NEW allows. No notice of their own follows."
                " Established citizens are listed first.",
                "",
                *lines,
                *([f"... and {more} more."] if more > 0 else []),
                "",
                "Their names, contacts and words are in the console (each advisory's roll call,"
                " answer 'needs help'; help messages on its first page), with the reveal:",
                self.console,
            ]
        )

    def payload(self) -> dict[str, object]:
        return {
            "event": "help.summary",
            "exercise": self.exercise,
            "count": self.citizens,
            "citizens": [
                {
                    "citizen_id": each.citizen_id,
                    "advisory_id": each.advisory_id,
                    "level": each.level,
                    "exercise": each.exercise,
                    "answered_at": each.answered_at.isoformat(),
                    "checkin_ids": list(each.checkin_ids),
                    "help_message_ids": list(each.help_message_ids),
                    "established": each.established,
                }
                for each in self.waiting
            ],
            "console": self.console,
        }


def _advisory_line(advisory: AskedBy) -> str:
    return f"{advisory.title} (level {advisory.level}, {advisory.advisory_id})"


# A help answer whose duty notice has not gone yet.
_UNTOLD_HELP = and_(Checkin.answer == "help", Checkin.duty_notified_at.is_(None))


def repage_after(helps: int) -> timedelta:
    """The least time between two pages about a citizen who gave `helps` help answers (this
    one among them) in the last day: 5, 10, 20, 40 minutes, then an hour."""
    return min(REPAGE_AFTER * 2 ** max(helps - 1, 0), REPAGE_MOST)


# Help counts whose gap is under REPAGE_MOST: 1 to 4.
_STEPS = [helps for helps in range(1, 32) if repage_after(helps) < REPAGE_MOST]


def _not_paged_lately(now: datetime) -> ColumnElement[bool]:
    """The help answer's citizen was not paged about within repage_after(their helps of the
    last day): about real help for a real advisory's answer, counting real helps, and about
    drill help for a drill's, counting drill helps (a drill answered with "2" a minute before
    a real emergency must not hold up the real page). Needs Advisory joined."""
    asked_by = aliased(Advisory)
    # By moment, not by row: one SMS answers every open check-in, a row each (a review saw
    # "2, 1, 2" under two advisories count as four helps).
    helps = (
        select(func.count(func.distinct(CheckinAnswer.answered_at)))
        .select_from(CheckinAnswer)
        .join(asked_by, asked_by.id == CheckinAnswer.advisory_id)
        .where(
            CheckinAnswer.citizen_id == Citizen.id,
            CheckinAnswer.answer == "help",
            CheckinAnswer.answered_at >= now - _HELPS_COUNTED_FOR,
            asked_by.exercise == Advisory.exercise,
        )
        .correlate(Citizen, Advisory)
        .scalar_subquery()
    )
    since = case(
        *((helps <= step, literal(now - repage_after(step), UTCDateTime())) for step in _STEPS),
        else_=literal(now - REPAGE_MOST, UTCDateTime()),
    )
    real = or_(Citizen.duty_paged_at.is_(None), Citizen.duty_paged_at < since)
    drill = or_(Citizen.duty_drill_paged_at.is_(None), Citizen.duty_drill_paged_at < since)
    return or_(and_(Advisory.exercise.is_(False), real), and_(Advisory.exercise.is_(True), drill))


def waiting(
    session: Session, *, answered_before: datetime, now: datetime, limit: int = 100
) -> list[int]:
    """Help answers given before `answered_before` whose notice has not gone yet (the request
    that recorded a newer one is sending it itself), but for citizens paged about within
    repage_after (their turn comes when that has passed)."""
    return list(
        session.scalars(
            select(Checkin.id)
            .join(Citizen, Citizen.id == Checkin.citizen_id)
            .join(Advisory, Advisory.id == Checkin.advisory_id)
            .where(_UNTOLD_HELP, Checkin.answered_at < answered_before, _not_paged_lately(now))
            .order_by(Checkin.id)
            .limit(limit)
        )
    )


@dataclass(frozen=True)
class CitizenCries:
    """One citizen's help answers still untold (a notice's worth), a drill's apart."""

    checkin_ids: list[int]
    exercise: bool
    established: bool  # else within rate_limit_duty_page_new only (models.ESTABLISHED_AFTER)


def by_citizen(session: Session, *, checkin_ids: list[int], now: datetime) -> list[CitizenCries]:
    """These help answers still untold, grouped into one notice each: per citizen, drills
    apart from real ones; not those of a citizen the duty staff were paged about within
    repage_after (they wait for the minute job). Reads ids only: no personal data."""
    if not checkin_ids:
        return []
    rows = session.execute(
        select(
            Checkin.id,
            Checkin.citizen_id,
            Advisory.exercise,
            is_established(now).label("established"),
        )
        .join(Advisory, Advisory.id == Checkin.advisory_id)
        .join(Citizen, Citizen.id == Checkin.citizen_id)
        .where(Checkin.id.in_(checkin_ids), _UNTOLD_HELP, _not_paged_lately(now))
        .order_by(Checkin.citizen_id, Checkin.id)
    )
    groups: dict[tuple[int, bool], CitizenCries] = {}
    for checkin_id, citizen_id, exercise, standing in rows:
        group = groups.setdefault(
            (citizen_id, exercise), CitizenCries([], exercise, bool(standing))
        )
        group.checkin_ids.append(checkin_id)
    return list(groups.values())


def read_notice(
    session: Session, *, vault: PersonalDataVault, checkin_ids: list[int], now: datetime
) -> DutyNotice | None:
    """The notice for one citizen's help answers still untold (one group of `by_citizen`),
    naming each advisory, the most recent first; None when all were told meanwhile. It is
    recorded in the audit log as a read of the citizen's personal data, in the caller's
    transaction."""
    rows = session.execute(
        select(Checkin, Citizen, Advisory, CheckinAnswer)
        .join(Citizen, Citizen.id == Checkin.citizen_id)
        .join(Advisory, Advisory.id == Checkin.advisory_id)
        .join(CheckinAnswer, CheckinAnswer.id == Checkin.answer_id)
        .where(Checkin.id.in_(checkin_ids), _UNTOLD_HELP)
        .order_by(Advisory.id.desc())
    ).all()
    if not rows:
        return None
    citizen = rows[0][1]
    latest = max((checkin for checkin, _, _, _ in rows), key=lambda c: (c.answered_at, c.id))
    # Usually one SMS, the same words under each advisory; different ones when the answers
    # came apart (a page under one, an SMS later): each is shown, the latest first.
    words: list[str] = []
    notes = [given.note_sealed for _, _, _, given in rows]
    for _, _, _, given in sorted(rows, key=lambda r: (r[3].answered_at, r[3].id), reverse=True):
        said = vault.read("checkin-note", given.note_sealed) or ""
        if said and said not in words:
            words.append(said)
    advisories = tuple(
        AskedBy(advisory.public_id, advisory.title_en or advisory.title_ko or "", advisory.level)
        for _, _, advisory, _ in rows
    )
    named = ", ".join(each.advisory_id for each in advisories)
    return DutyNotice(
        advisories=advisories,
        checkin_ids=tuple(checkin.id for checkin, _, _, _ in rows),
        channel=latest.channel,
        note=" / ".join(words),
        answered_at=latest.answered_at,
        exercise=rows[0][2].exercise,
        safe_said_at=max((c.safe_said_at for c, _, _, _ in rows if c.safe_said_at), default=None),
        **_who_needs_help(
            session,
            vault,
            citizen,
            notes=notes,
            reason=f"check-in answer 'help' to advisory {named}",
            now=now,
        ),
    )


def waiting_help_messages(
    session: Session, *, received_before: datetime, now: datetime, limit: int = 100
) -> list[int]:
    """One help message (no check-in open) per citizen with any untold received before
    `received_before`, whose duty staff were not paged about them within HELP_MESSAGE_QUIET:
    its notice carries every untold one of theirs."""
    rows = session.execute(
        select(HelpMessage.citizen_id, func.max(HelpMessage.id))
        .where(
            HelpMessage.duty_notified_at.is_(None),
            HelpMessage.received_at < received_before,
        )
        .group_by(HelpMessage.citizen_id)
        .order_by(func.max(HelpMessage.id))
        .limit(limit)
    ).all()
    due = []
    for citizen_id, message_id in rows:
        paged = last_paged(session, citizen_id=citizen_id)
        if paged is None or paged < now - HELP_MESSAGE_QUIET:
            due.append(message_id)
    return due


# Messages one notice quotes at most (the rest are counted: all are in the reveal).
QUOTED = 10


def read_help_message_notice(
    session: Session, *, vault: PersonalDataVault, help_message_id: int, now: datetime
) -> DutyNotice | None:
    """As read_notice, for help messages that no check-in asked for: every untold one of the
    citizen who sent this one, newest first, in one notice."""
    citizen = session.scalar(
        select(Citizen)
        .join(HelpMessage, HelpMessage.citizen_id == Citizen.id)
        .where(HelpMessage.id == help_message_id)
    )
    if citizen is None:
        return None
    messages = session.scalars(
        select(HelpMessage)
        .where(HelpMessage.citizen_id == citizen.id, HelpMessage.duty_notified_at.is_(None))
        .order_by(HelpMessage.received_at.desc(), HelpMessage.id.desc())
    ).all()
    if not messages:
        return None
    words: list[str] = []
    notes = [message.note_sealed for message in messages[:QUOTED]]
    for message in messages[:QUOTED]:
        said = vault.read("checkin-note", message.note_sealed) or ""
        if said and said not in words:
            words.append(said)
    more = f" (and {len(messages) - QUOTED} more)" if len(messages) > QUOTED else ""
    return DutyNotice(
        help_message_ids=tuple(message.id for message in messages),
        channel=messages[0].channel,
        note=" / ".join(words) + more,
        answered_at=messages[0].received_at,
        **_who_needs_help(
            session,
            vault,
            citizen,
            notes=notes,
            reason="a 'need help' SMS with no check-in open",
            now=now,
        ),
    )


def _who_needs_help(
    session: Session,
    vault: PersonalDataVault,
    citizen: Citizen,
    *,
    notes: list[bytes | None],
    reason: str,
    now: datetime,
) -> dict:
    """The notice's fields that let the duty staff reach the person, read and audited as a
    read of their personal data, and which of those and of their words (`notes`, sealed) no
    listed data secret opens."""
    sealed = [
        ("name", "name", citizen.name_sealed),
        ("phone", "phone", citizen.phone_sealed),
        ("email", "email", citizen.email_sealed),
        *(("note", "checkin-note", note) for note in notes),
    ]
    unreadable = tuple(
        dict.fromkeys(name for name, field, blob in sealed if blob and not vault.opens(field, blob))
    )
    audit.record(
        session,
        actor=ACTOR,
        role="system",
        client="-",
        action="duty notice: citizen needs help",
        subject=citizen.public_id,
        reason=reason,
        now=now,
    )
    return {
        "citizen_id": citizen.public_id,
        # A value no listed secret opens reads UNREADABLE: the notice still goes, with the id.
        "name": vault.read("name", citizen.name_sealed) or "",
        "phone": vault.read("phone", citizen.phone_sealed),
        "email": vault.read("email", citizen.email_sealed),
        "language": citizen.language,
        "place": _place(session, citizen.id),
        "unreadable": unreadable,
        "established": established(citizen, now),
    }


def _place(session: Session, citizen_id: int) -> str:
    places = session.scalars(
        select(CitizenPlace)
        .where(CitizenPlace.citizen_id == citizen_id)
        .order_by(CitizenPlace.kind, CitizenPlace.id)
    ).all()
    parts = []
    for p in places:
        where = f"{p.lat:.4f}, {p.lon:.4f} ({p.country or '?'})" if p.lat is not None else p.country
        dates = f" {p.starts_on}..{p.ends_on}" if p.kind == "stay" else ""
        parts.append(f"{p.kind}: {where}{dates}")
    return "; ".join(parts) or "unknown"


def send_notice(
    notice: DutyNotice | DutySummary, *, notifiers: Mapping[str, Notifier], settings: Settings
) -> bool:
    """E-mail every duty address and POST the duty webhook; True when at least one took it
    (then the notice counts as told). Outside any transaction: sending may be slow."""
    told = False
    subject = notice.subject(settings.alert_sender_en)
    for address in settings.duty_email:
        outcome = notifiers["email"].send(
            OutgoingMessage(
                alert_id=0,
                channel="email",
                to=address,
                text=notice.text(),
                subject=subject,
                reference=f"duty-{uuid.uuid4().hex}",
            )
        )
        told |= isinstance(outcome, Sent)
        if not isinstance(outcome, Sent):
            log.error("duty e-mail not sent", extra={"outcome": scrub_contacts(repr(outcome))})
    if settings.duty_webhook_url:
        try:
            status = post_signed_json(
                settings.duty_webhook_url,
                notice.payload(),
                secret=revealed(settings.webhook_secret),
            )
            told |= 200 <= status < 300
            if not 200 <= status < 300:
                log.error("duty webhook refused", extra={"status": status})
        except httpx.HTTPError as exc:
            log.error("duty webhook unreachable", extra={"error": repr(exc)})
    return told


def tell_duty(
    factory: sessionmaker[Session],
    *,
    vault: PersonalDataVault,
    notifiers: Mapping[str, Notifier],
    settings: Settings,
    checkin_ids: list[int],
    now: datetime,
    help_message_ids: list[int] | None = None,
    limits: RateLimits | None = None,
    still_ours: Callable[[], bool] = lambda: True,
) -> int:
    """Send the notices of these help answers (one per citizen) and help messages not yet
    told; returns how many citizens were told of. They are read (and audited) in a short
    transaction, each sent, then marked told in its own. Past the hour's notices one by one
    (counted in `limits`, drills apart), every cry still untold goes in one summary instead,
    or waits for the next (SUMMARY_LISTED). `still_ours` is asked before each send (the
    minute job's lease): a holder paused past its lease stops, and leaves the rest to the
    process that took it over, which read them untold too."""
    help_message_ids = help_message_ids or []
    if not checkin_ids and not help_message_ids:
        return 0
    if not settings.pages_duty_staff:
        # Nobody to tell: nothing is read; the minute job tries again once someone is set.
        log.error("a citizen needs help and no duty contact is set (ANJEON_DUTY_EMAIL)")
        return 0
    told = 0
    hour = _DutyHour(limits)
    try:
        with factory.begin() as session:
            groups = by_citizen(session, checkin_ids=checkin_ids, now=now)
    except Exception:  # the minute job sends what this could not
        log.exception("duty notices could not be read", extra={"checkin_ids": checkin_ids})
        groups = []
    # Each citizen's notice on its own: one that cannot be read or sent holds up no other.
    tell_of_answers = partial(
        _tell_of_answers, factory, vault=vault, notifiers=notifiers, settings=settings, now=now
    )
    tell_of_messages = partial(
        _tell_of_help_messages,
        factory,
        vault=vault,
        notifiers=notifiers,
        settings=settings,
        now=now,
    )
    notices = [
        (cries.exercise, cries.established, partial(tell_of_answers, group=cries.checkin_ids))
        for cries in groups
    ]
    # A help message is an SMS from the citizen's own verified number: established.
    notices += [
        (False, True, partial(tell_of_messages, help_message_id=m)) for m in help_message_ids
    ]
    # Established citizens first: with the hour nearly spent, new records' cries must not take
    # the last notices ahead of them.
    notices.sort(key=lambda notice: not notice[1])
    for exercise, standing, tell in notices:
        if not still_ours():
            log.warning("duty notices stopped: another process took them over")
            return told
        with hour.one_by_one(exercise, established=standing) as room:
            if room is not None:
                room.sent = tell()
                told += room.sent
    for exercise in hour.past:
        if not still_ours():
            log.warning("duty notices stopped: another process took them over")
            return told
        try:
            told += _tell_in_summary(
                factory, hour, notifiers=notifiers, settings=settings, exercise=exercise, now=now
            )
        except Exception:  # the minute job sends what this could not
            log.exception("duty summary failed")
    return told


def _tell_of_answers(
    factory: sessionmaker[Session],
    *,
    vault: PersonalDataVault,
    notifiers: Mapping[str, Notifier],
    settings: Settings,
    group: list[int],
    now: datetime,
) -> bool:
    """One citizen's notice of their help answers (a group of by_citizen); whether it went."""
    try:
        with factory.begin() as session:
            notice = read_notice(session, vault=vault, checkin_ids=group, now=now)
        if notice is None or not send_notice(notice, notifiers=notifiers, settings=settings):
            return False
        with factory.begin() as session:
            _mark_paged(session, notice.citizen_id, notice.checkin_ids, notice.exercise, now)
        return True
    except Exception:  # the minute job sends what this could not
        log.exception("duty notice failed", extra={"checkin_ids": group})
        return False


def _tell_of_help_messages(
    factory: sessionmaker[Session],
    *,
    vault: PersonalDataVault,
    notifiers: Mapping[str, Notifier],
    settings: Settings,
    help_message_id: int,
    now: datetime,
) -> bool:
    """One citizen's notice of their help messages untold; whether it went."""
    try:
        with factory.begin() as session:
            notice = read_help_message_notice(
                session, vault=vault, help_message_id=help_message_id, now=now
            )
        if notice is None or not send_notice(notice, notifiers=notifiers, settings=settings):
            return False
        with factory.begin() as session:
            mark_help_message_told(session, help_message_ids=notice.help_message_ids, now=now)
        return True
    except Exception:  # the minute job sends what this could not
        log.exception("duty notice failed", extra={"help_message_id": help_message_id})
        return False


def _mark_paged(
    session: Session,
    citizen_id: str,
    checkin_ids: tuple[int, ...],
    exercise: bool,
    now: datetime,
    *,
    answered_by: datetime | None = None,
) -> None:
    """The duty staff were told of these help answers of the citizen's (a drill's apart); with
    `answered_by`, only of those answered by then (a help given since was not in the notice)."""
    # The citizen row before their check-ins, the order an erasure locks them in.
    paged = Citizen.duty_drill_paged_at if exercise else Citizen.duty_paged_at
    session.execute(
        update(Citizen)
        .where(Citizen.public_id == citizen_id)
        .values({paged: now})
        .execution_options(synchronize_session=False)
    )
    mark_duty_told(session, checkin_ids=checkin_ids, now=now, answered_by=answered_by)


@dataclass
class _Room:
    """One notice the hour had room for; `sent` once it went (else its count is given back)."""

    taken_at: float
    sent: bool = False


class _DutyHour:
    """The hour's notices one by one and the summaries' gate, counted in `limits` (None: no
    cap), drills apart from real cries (a drill must not hold up a real page, as in
    _not_paged_lately). A notice that could not be read or sent is given back, so a mail relay
    down does not spend the hour. A storage that does not answer lets every notice go, and is
    not asked again in this run: each ask would wait for its timeout, and a minute job's run
    of a hundred notices would outlast its lease."""

    def __init__(self, limits: RateLimits | None) -> None:
        self._limits = limits
        self._away = False  # the storage did not answer: nothing is counted this run
        self.past: list[bool] = []  # kinds (exercise or not) with a cry past the hour

    @contextmanager
    def one_by_one(self, exercise: bool, *, established: bool = True) -> Iterator[_Room | None]:
        """A notice of its own, if the hour has room; a record not established only within its
        part of the hour (rate_limit_duty_page_new), so that a script's records cannot spend
        the notices of everyone else."""
        rules = [Rule.DUTY_PAGE] if established else [Rule.DUTY_PAGE_NEW, Rule.DUTY_PAGE]
        taken: list[tuple[Rule, _Room]] = []
        for rule in rules:
            room = self._take(rule, exercise)
            if room is None:
                break
            taken.append((rule, room))
        # Uncounted while the storage is away: a new record's cry goes in the summary then, or
        # a script's records would each have a notice for as long as the outage lasts.
        whole = len(taken) == len(rules) and (established or not self._away)
        if not whole and exercise not in self.past:
            self.past.append(exercise)
        room = taken[-1][1] if whole else None
        yield room
        if room is None or not room.sent:
            for rule, each in taken:
                self._give_back(rule, exercise, each)

    @contextmanager
    def summary(self, exercise: bool) -> Iterator[_Room | None]:
        room = self._take(Rule.DUTY_SUMMARY, exercise)
        try:
            yield room
        finally:
            if room is not None and not room.sent:
                self._give_back(Rule.DUTY_SUMMARY, exercise, room)

    def _take(self, rule: Rule, exercise: bool) -> _Room | None:
        room = _Room(taken_at=time.monotonic())
        if self._limits is None:
            return room
        try:
            self._limits.take(rule, _duty_key(exercise))
        except TooManyRequests:
            return None
        except ServiceUnavailable:
            log.error("rate-limit storage unreachable: duty notices sent uncounted")
            self._limits, self._away = None, True
        return room

    def _give_back(self, rule: Rule, exercise: bool, room: _Room) -> None:
        if self._limits is None:
            return
        try:
            taken_s_ago = time.monotonic() - room.taken_at
            self._limits.give_back(rule, _duty_key(exercise), taken_s_ago=taken_s_ago)
        except ServiceUnavailable:
            self._limits, self._away = None, True


def _duty_key(exercise: bool) -> str:
    return "duty:exercise" if exercise else "duty"


def _tell_in_summary(
    factory: sessionmaker[Session],
    hour: _DutyHour,
    *,
    notifiers: Mapping[str, Notifier],
    settings: Settings,
    exercise: bool,
    now: datetime,
) -> int:
    """One summary of every cry of this kind still untold, established citizens' first, then
    the earliest (up to
    SUMMARY_MOST), when none went in the last 10 minutes (else they wait for the minute job's
    next turn); marks them told. Returns how many citizens it told of."""
    with hour.summary(exercise) as room:
        if room is None:
            log.warning("citizens in need wait for the next duty summary")
            return 0
        with factory.begin() as session:
            waiting = read_waiting(session, exercise=exercise, now=now)
        if not waiting:
            return 0
        console = f"{settings.public_base_url.rstrip('/')}/console/"
        summary = DutySummary(waiting=tuple(waiting), console=console)
        room.sent = send_notice(summary, notifiers=notifiers, settings=settings)
        if not room.sent:
            return 0
    for each in waiting:  # a transaction each, in the order the notices one by one lock
        with factory.begin() as session:
            if each.checkin_ids:
                _mark_paged(
                    session,
                    each.citizen_id,
                    each.checkin_ids,
                    each.exercise,
                    now,
                    answered_by=each.answered_at,
                )
            else:
                mark_help_message_told(session, help_message_ids=each.help_message_ids, now=now)
    log.warning("duty staff told in a summary", extra={"citizens": summary.citizens})
    return summary.citizens


# Cries one summary reads, established citizens' first, then the earliest: more wait for the
# next (the console has all).
SUMMARY_MOST = 2000


def read_waiting(session: Session, *, exercise: bool, now: datetime) -> list[Waiting]:
    """A summary's lines: every citizen's help answers of this kind still untold (not those
    paged about lately, as `waiting`), and, for real cries, every citizen's help messages
    still untold; established citizens' first, then the earliest, up to SUMMARY_MOST rows of
    each. Ids only: no personal
    data."""
    answers: dict[str, Waiting] = {}
    for checkin_id, answered_at, citizen_id, advisory_id, level, standing in session.execute(
        select(
            Checkin.id,
            Checkin.answered_at,
            Citizen.public_id,
            Advisory.public_id,
            Advisory.level,
            is_established(now).label("established"),
        )
        .join(Citizen, Citizen.id == Checkin.citizen_id)
        .join(Advisory, Advisory.id == Checkin.advisory_id)
        .where(_UNTOLD_HELP, Advisory.exercise.is_(exercise), _not_paged_lately(now))
        # Established citizens' cries first, then by time (one citizen's stay in time order).
        .order_by(is_established(now).desc(), Checkin.answered_at, Checkin.id)
        .limit(SUMMARY_MOST)
    ):
        earlier = answers[citizen_id].checkin_ids if citizen_id in answers else ()
        # The latest answer names the line's advisory and time (the rows come in time order).
        answers[citizen_id] = Waiting(
            citizen_id,
            advisory_id,
            level,
            exercise,
            answered_at,
            (*earlier, checkin_id),
            established=bool(standing),
        )
    messages: dict[str, Waiting] = {}
    if not exercise:
        for message_id, received_at, citizen_id in session.execute(
            select(HelpMessage.id, HelpMessage.received_at, Citizen.public_id)
            .join(Citizen, Citizen.id == HelpMessage.citizen_id)
            .where(HelpMessage.duty_notified_at.is_(None))
            .order_by(HelpMessage.received_at, HelpMessage.id)
            .limit(SUMMARY_MOST)
        ):
            earlier = messages[citizen_id].help_message_ids if citizen_id in messages else ()
            messages[citizen_id] = Waiting(
                citizen_id, None, "", False, received_at, help_message_ids=(*earlier, message_id)
            )
    # Established citizens first: a flood of new records' cries must not push theirs down
    # into "... and N more".
    return sorted(
        [*answers.values(), *messages.values()],
        key=lambda each: (not each.established, each.answered_at),
    )
