"""Recording a citizen's answer to "are you safe?": from an SMS reply (found by the number's
blind index, for each of their open check-ins) or from the check-in link's page. Every answer
is kept; the latest is the one in force."""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.advisories.levels import asks_checkin
from service.advisories.models import Advisory, AdvisoryRevision
from service.checkin.models import Checkin, CheckinAnswer, HelpMessage, InboundSms
from service.checkin.replies import Answer, Reply, ReplyKind, classify
from service.citizens.models import Citizen
from service.citizens.verification import contact_hash
from service.dispatch.reference import CHECKIN_LINK_DAYS
from service.dispatch.sms_opt_out import hear_opt_out, stopped_at
from service.ledger import states
from service.ledger.models import Ahead, Alert
from service.privacy import PersonalDataVault
from service.schema_rules import UNSHOWN

# A reply counts for a check-in asked at most this long ago, as long as its link answers.
OPEN_FOR = timedelta(days=CHECKIN_LINK_DAYS)
# At most one duty notice this often for a citizen's help messages that no check-in asked for
# (the ones in between go together in the next).
HELP_MESSAGE_QUIET = timedelta(minutes=30)
# Help messages kept per citizen an hour: more is an auto-responder, or someone burying others.
HELP_MESSAGES_KEPT = 20
NOTE_MAX = 500


def note_kept(text: str | None) -> str | None:
    """A citizen's own words as kept for staff: what cannot be shown left out (UNSHOWN: NUL and
    the other controls but line breaks and tabs, and what displays as other text, "\u202eevil"
    reads "live"), then trimmed and cut at NOTE_MAX; None when nothing is left."""
    return UNSHOWN.sub("", text or "").strip()[:NOTE_MAX] or None


@dataclass(frozen=True)
class Recorded:
    checkin_id: int
    answer: Answer  # as given
    # A "help" that was not "help" before: the duty staff must be told now.
    tell_duty: bool
    # A safe from a page kept beside a help in force, which stays until a consul confirms.
    help_kept: bool = False


@dataclass(frozen=True)
class Heard:
    """What an SMS reply did: the reading, the citizen's language (None: no citizen or no open
    check-in matched, and nothing was stored) and what was recorded."""

    reply: Reply
    language: str | None
    # One per open check-in the answer counts for (an SMS names no advisory: it answers every
    # one that asked them, the most recent first).
    recorded: tuple[Recorded, ...] = ()
    duplicate: bool = False
    # A "need help" with no check-in open to file it under: kept as a HelpMessage (its id),
    # and the duty staff must be told now all the same.
    help_message_id: int | None = None
    # A "need help" that no check-in asked for (answered without "reply 1 if you are safe":
    # a "1" would find nothing to answer).
    unasked: bool = False
    # A citizen holds the number (their answers are limited per number; a number nobody holds
    # gets one answer a day, and all of those a few: RateLimits.take_reply).
    registered: bool = False
    # The number said STOP: no text of ours goes to it, the answer in TwiML neither.
    stopped: bool = False

    @property
    def kind(self) -> ReplyKind:
        return self.reply.kind


def asking_revisions(session: Session, advisory_id: int) -> list[int]:
    """The advisory's revisions whose own alerts asked for a check-in (levels 3, 4, special, CAP
    Extreme; never an all-clear)."""
    return _asking_revisions_of(session, [advisory_id]).get(advisory_id, [])


def _asking_revisions_of(session: Session, advisory_ids: list[int]) -> dict[int, list[int]]:
    """asking_revisions of several advisories, in one query."""
    asking: dict[int, list[int]] = {}
    for advisory_id, revision, content, change in session.execute(
        select(
            AdvisoryRevision.advisory_id,
            AdvisoryRevision.revision,
            AdvisoryRevision.content,
            AdvisoryRevision.change,
        ).where(AdvisoryRevision.advisory_id.in_(advisory_ids))
    ):
        level, severity = str(content.get("level")), content.get("severity") or ""
        if change != "cancelled" and asks_checkin(level, severity=severity):
            asking.setdefault(advisory_id, []).append(revision)
    return asking


def asks(  # noqa: ANN201 - a SQL expression
    session: Session, advisory_id: int, *, revisions: list[int] | None = None
):
    """The ledger rows of this advisory that asked "are you safe?": every round, and the
    advisory's own rows of an asking revision but those told ahead of a stay. `revisions`:
    its asking revisions, when the caller has read them already."""
    if revisions is None:
        revisions = asking_revisions(session, advisory_id)
    return or_(
        Alert.checkin_round > 0,
        and_(
            Alert.revision.in_(revisions),
            Alert.told_ahead == Ahead.NO,
        ),
    )


def hear_sms(
    session: Session,
    *,
    vault: PersonalDataVault,
    sender: str,
    body: str,
    provider_ref: str,
    now: datetime,
) -> Heard:
    """An SMS from `sender` (E.164, as the provider gives it). STOP and START change whether we
    text the number at all, registered or not; an answer is recorded against each of the
    sender's open check-ins. A "need help" from a citizen with no open check-in is kept as a
    HelpMessage. Anything else from an unknown number, or one with no open check-in, stores
    nothing (but its message id). A message whose provider id was heard before (a retried or
    replayed webhook) changes nothing: it is read as `duplicate`."""
    reply = classify(body)
    if not _first_time(session, vault, provider_ref, now=now):
        return Heard(reply, None, duplicate=True)
    phone_hash = contact_hash(vault, "sms", sender)
    if reply.kind in ("stop", "start"):
        # The number's, whoever holds it (or nobody yet: a later registration inherits it).
        hear_opt_out(session, phone_hash=phone_hash, stop=reply.kind == "stop", now=now)
    citizen = session.scalar(
        answering(
            select(Citizen).where(Citizen.phone_hash == phone_hash, Citizen.status == "active")
        )
    )
    if reply.kind in ("stop", "start"):
        return Heard(reply, citizen.language if citizen else None)
    if citizen is None:
        return Heard(reply, None, stopped=stopped_at(session, phone_hash) is not None)
    return replace(
        _heard_from(session, vault, citizen, reply, body, now),
        stopped=citizen.sms_opted_out_at is not None,
        registered=True,
    )


def answering(query: Select[tuple[Citizen]]) -> Select[tuple[Citizen]]:
    """The citizen an answer is about, held for the answer's transaction (PostgreSQL's FOR NO
    KEY UPDATE), before their check-ins, as an erasure locks them:
    - an answer during an erasure lands first, and its words go with the record, or finds the
      record erased (a probe's words, written after the erasure's 204, were kept and paged to
      duty staff);
    - a citizen's answers wait for each other, so a link's hourly cap and the help messages
      kept an hour are counted and written one at a time (a probe's 30 presses at once on one
      link stored 30 of 20)."""
    return query.with_for_update(key_share=True).execution_options(populate_existing=True)


def _heard_from(
    session: Session,
    vault: PersonalDataVault,
    citizen: Citizen,
    reply: Reply,
    body: str,
    now: datetime,
) -> Heard:
    """What a registered citizen's SMS (not STOP or START) did."""
    advisory_ids = open_checkins(session, citizen_id=citizen.id, now=now)
    if not advisory_ids and reply.kind == "help":
        # Nothing asked them, yet a registered person says they need help: kept (up to
        # HELP_MESSAGES_KEPT an hour: an auto-responder must not bury everyone else's), and the
        # duty staff paged now unless they were paged about this citizen within
        # HELP_MESSAGE_QUIET; then the minute job pages once that has passed, with every
        # message since in one notice (new words are never dropped, nor paged one by one).
        kept_lately = session.scalar(
            select(func.count())
            .select_from(HelpMessage)
            .where(
                HelpMessage.citizen_id == citizen.id,
                HelpMessage.received_at >= now - timedelta(hours=1),
            )
        )
        if (kept_lately or 0) >= HELP_MESSAGES_KEPT:
            return Heard(reply, citizen.language, unasked=True)
        note = note_kept(body)
        message = HelpMessage(
            citizen_id=citizen.id,
            channel="sms",
            note_sealed=vault.seal("checkin-note", note) if note else None,
            received_at=now,
        )
        session.add(message)
        session.flush()
        paged = last_paged(session, citizen_id=citizen.id)
        page_now = paged is None or paged < now - HELP_MESSAGE_QUIET
        return Heard(
            reply,
            citizen.language,
            help_message_id=message.id if page_now else None,
            unasked=True,
        )
    if not advisory_ids:
        return Heard(reply, None)
    if reply.kind not in ("safe", "help"):
        return Heard(reply, citizen.language)
    recorded = tuple(
        record_answer(
            session,
            vault=vault,
            advisory_id=advisory_id,
            citizen_id=citizen.id,
            answer=reply.kind,  # type: ignore[arg-type]
            channel="sms",
            note=body,
            now=now,
        )
        # One order for every writer (the page too): two answers at once lock the same rows
        # in the same order, never waiting on each other.
        for advisory_id in sorted(advisory_ids)
    )
    return Heard(reply, citizen.language, recorded)


def _first_time(
    session: Session, vault: PersonalDataVault, provider_ref: str, *, now: datetime
) -> bool:
    """Remember the message id (inbound_key's hash of it); False when it was heard before.
    Without an id (a provider that gives none) every message counts."""
    if not provider_ref:
        return True
    kept_whole = select(InboundSms.id).where(InboundSms.provider_ref == provider_ref[:64])
    if session.scalar(kept_whole) is not None:
        return False  # heard before ids were hashed, and not hashed since (hash_inbound_ids)
    try:
        with session.begin_nested():
            session.add(InboundSms(provider_ref=inbound_key(vault, provider_ref), received_at=now))
            session.flush()
    except IntegrityError:
        return False
    return True


# A hashed id says so: ids kept whole (before 2026-12-07) are hashed by the forget-inbound-sms
# job (every 6 hours).
_HASHED = "k:"


def inbound_key(vault: PersonalDataVault, provider_ref: str) -> str:
    """What an inbound message's id is kept as: a keyed hash. The provider's log holds the
    sender's number and words under the id, and the moment it was heard is the answer's own:
    kept whole, an erased citizen's ids led back to them (a privacy review)."""
    return _HASHED + vault.lookup_hash("inbound-sms", provider_ref)[:62]


_HASHED_A_BATCH = 1_000
_HASHED_A_RUN = 100_000


def hash_inbound_ids(session: Session, vault: PersonalDataVault) -> int:
    """Hash up to _HASHED_A_RUN ids kept whole by an earlier release; returns how many. One
    whose hash is kept already (heard again by a process of the earlier release while one of
    this release had kept it: an upgrade under way) just goes: a review saw the twin break the
    unique key, and the job fail at every run."""
    done = 0
    while done < _HASHED_A_RUN:
        whole = session.execute(
            select(InboundSms.id, InboundSms.provider_ref)
            .where(~InboundSms.provider_ref.startswith(_HASHED, autoescape=True))
            .order_by(InboundSms.id)
            .limit(_HASHED_A_BATCH)
        ).all()
        if not whole:
            break
        keyed = {row_id: inbound_key(vault, ref) for row_id, ref in whole}
        twins = set(
            session.scalars(
                select(InboundSms.provider_ref).where(InboundSms.provider_ref.in_(keyed.values()))
            )
        )
        gone = [row_id for row_id, key in keyed.items() if key in twins]
        if gone:
            session.execute(delete(InboundSms).where(InboundSms.id.in_(gone)))
        hashed = [{"id": i, "provider_ref": key} for i, key in keyed.items() if key not in twins]
        if hashed:
            session.execute(update(InboundSms), hashed)
        done += len(whole)
    return done


# Providers retry a webhook for minutes, but Twilio's signature holds no time: a signed request
# copied from a log and replayed once its id was forgotten was heard again (a probe turned a
# citizen's later "2, trapped" into "safe" with their week-old "1"). Ids (no number, no words;
# about 100 bytes a reply) are kept for 400 days; a replay older than that is not stopped.
INBOUND_KEPT = timedelta(days=400)


def forget_old_inbound(session: Session, *, now: datetime) -> int:
    """Drop the ids of inbound messages older than INBOUND_KEPT; returns how many."""
    result = session.execute(
        delete(InboundSms)
        .where(InboundSms.received_at < now - INBOUND_KEPT)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def forget_old_words(session: Session, *, now: datetime, kept_days: int) -> int:
    """A citizen's own words (a check-in note, a help message) older than `kept_days` are
    dropped, whether or not they erase themselves: "my wife is hurt" serves the crisis it was
    written in, not a record kept for ever. The answers and messages stay, without their words.
    Returns how many were dropped."""
    cutoff = now - timedelta(days=kept_days)
    dropped = 0
    for table, written in (
        (CheckinAnswer, CheckinAnswer.answered_at),
        (HelpMessage, HelpMessage.received_at),
    ):
        result = session.execute(
            update(table)
            .where(table.note_sealed.is_not(None), written < cutoff)
            .values(note_sealed=None)
            .execution_options(synchronize_session=False)
        )
        dropped += result.rowcount or 0
    return dropped


def open_checkins(session: Session, *, citizen_id: int, now: datetime) -> list[int]:
    """The advisories of the citizen's open check-ins, the most recent first: each that asked
    them within OPEN_FOR, may have reached them, and is not cancelled. Two advisories over one
    place both ask, and an SMS reply names neither, so it answers both. Real ones only when
    there are any: a cry for help must never be filed under an exercise (nor a drill's
    answer under a real advisory)."""
    candidates = session.execute(
        select(
            Alert.advisory_id,
            Alert.revision,
            Alert.checkin_round,
            Advisory.exercise,
        )
        .join(Advisory, Advisory.id == Alert.advisory_id)
        .where(
            Alert.citizen_id == citizen_id,
            or_(Alert.status.in_(states.MAY_HAVE_REACHED), Alert.outcome_unknown.is_(True)),
            Alert.created_at >= now - OPEN_FOR,
            Advisory.status != "cancelled",
            # Told ahead of a stay, it did not ask. No cut by count before the asking ones are
            # picked out: a probe's 50 routine alerts pushed a real check-in out of the newest
            # 50 rows, and a cry for help was filed under a drill.
            or_(Alert.checkin_round > 0, Alert.told_ahead == Ahead.NO),
        )
        .order_by(Alert.id.desc())
    ).all()
    asking = _asking_revisions_of(
        session, sorted({row.advisory_id for row in candidates if row.checkin_round == 0})
    )
    real: list[int] = []
    drills: list[int] = []
    for advisory_id, revision, checkin_round, exercise in candidates:
        if checkin_round == 0 and revision not in asking.get(advisory_id, ()):
            continue
        found = drills if exercise else real
        if advisory_id not in found:
            found.append(advisory_id)
    return real or drills


def record_answer(
    session: Session,
    *,
    vault: PersonalDataVault,
    advisory_id: int,
    citizen_id: int,
    answer: Answer,
    channel: str,
    note: str | None,
    now: datetime,
) -> Recorded:
    """Keep the answer and make it the one in force (the latest wins), but for a safe from a
    page while help is in force: a link can be forwarded or leaked, and whoever holds it must
    not end a cry for help unseen. That safe is kept and shown beside the help
    (`safe_said_at`); the help stays in force until the citizen's own phone says safe or a
    consul who reached them confirms it (`confirm_safe`)."""
    note = note_kept(note)
    given = CheckinAnswer(
        advisory_id=advisory_id,
        citizen_id=citizen_id,
        answer=answer,
        channel=channel,
        note_sealed=vault.seal("checkin-note", note) if note else None,
        answered_at=now,
    )
    session.add(given)
    session.flush()
    current = _current(session, advisory_id=advisory_id, citizen_id=citizen_id)
    tell_duty = answer == "help" and (current is None or current.answer != "help")
    if current is None:
        current = Checkin(
            advisory_id=advisory_id,
            citizen_id=citizen_id,
            answer=answer,
            channel=channel,
            answer_id=given.id,
            answered_at=now,
        )
        try:
            with session.begin_nested():
                session.add(current)
                session.flush()
        except IntegrityError:
            # Another answer of the same citizen (SMS and page at once) made the row first:
            # this one is the later, so it wins.
            current = _current(session, advisory_id=advisory_id, citizen_id=citizen_id)
            assert current is not None
            tell_duty = answer == "help" and current.answer != "help"
    if answer == "safe" and channel == "web" and current.answer == "help":
        current.safe_said_at = now
        session.flush()
        return Recorded(checkin_id=current.id, answer=answer, tell_duty=False, help_kept=True)
    current.answer = answer
    current.safe_said_at = current.words_at = None
    current.channel = channel
    current.answer_id = given.id
    current.answered_at = now
    if tell_duty:
        current.duty_notified_at = None
    if answer != "help" and channel == "sms":
        # Safe now, from their own phone: nobody is handling a case any more (a later help is
        # a new one to take). A safe from a page keeps the consul's name: a link can be
        # forwarded or leaked, so the consul calls to make sure, then gives the case back.
        current.taken_by = current.taken_at = None
    session.flush()
    return Recorded(checkin_id=current.id, answer=answer, tell_duty=tell_duty)


def record_confirmed_safe(
    session: Session, *, checkins: list[Checkin], staff: str, now: datetime
) -> None:
    """A consul reached the citizen and found them safe: a safe with channel "staff", given by
    the consul, becomes the answer in force of each help answer among `checkins` (the
    citizen's, locked by the caller), and the case closes: nobody holds any of them any more
    (a take the old rules left on a safe would otherwise claim their next cry for help)."""
    helps = [row for row in checkins if row.answer == "help"]
    given = [
        CheckinAnswer(
            advisory_id=row.advisory_id,
            citizen_id=row.citizen_id,
            answer="safe",
            channel="staff",
            given_by=staff,
            answered_at=now,
        )
        for row in helps
    ]
    session.add_all(given)
    session.flush()
    for row, answer in zip(helps, given, strict=True):
        row.answer, row.channel, row.answer_id, row.answered_at = "safe", "staff", answer.id, now
        row.safe_said_at = row.words_at = None
    for row in checkins:
        row.taken_by = row.taken_at = None
    session.flush()


def _current(session: Session, *, advisory_id: int, citizen_id: int) -> Checkin | None:
    return session.scalar(
        select(Checkin)
        .where(Checkin.advisory_id == advisory_id, Checkin.citizen_id == citizen_id)
        .with_for_update()
    )


def history(session: Session, *, advisory_id: int, citizen_id: int) -> list[CheckinAnswer]:
    """Every answer, oldest first."""
    return list(
        session.scalars(
            select(CheckinAnswer)
            .where(CheckinAnswer.advisory_id == advisory_id, CheckinAnswer.citizen_id == citizen_id)
            .order_by(CheckinAnswer.id)
        )
    )


def last_paged(session: Session, *, citizen_id: int) -> datetime | None:
    """When the duty staff were last told of this citizen's help messages."""
    return session.scalar(
        select(func.max(HelpMessage.duty_notified_at)).where(HelpMessage.citizen_id == citizen_id)
    )


def mark_help_message_told(
    session: Session, *, help_message_ids: tuple[int, ...], now: datetime
) -> None:
    session.execute(
        update(HelpMessage)
        .where(HelpMessage.id.in_(help_message_ids))
        .values(duty_notified_at=now)
        .execution_options(synchronize_session=False)
    )


def mark_duty_told(
    session: Session,
    *,
    checkin_ids: Sequence[int],
    now: datetime,
    answered_by: datetime | None = None,
) -> None:
    """The duty staff were told of these check-ins' help (with `answered_by`, only of those
    answered by then). They are locked in advisory order first, as every writer of a
    citizen's check-ins locks them (a review: marked newest first, they deadlocked with a
    consul taking the case, and the notice went twice)."""
    session.execute(
        select(Checkin.id)
        .where(Checkin.id.in_(checkin_ids))
        .order_by(Checkin.advisory_id)
        .with_for_update()
    ).all()
    told = Checkin.id.in_(checkin_ids)
    if answered_by is not None:
        told &= Checkin.answered_at <= answered_by
    session.execute(
        update(Checkin)
        .where(told)
        .values(duty_notified_at=now)
        .execution_options(synchronize_session=False)
    )
