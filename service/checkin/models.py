"""Check-in answers: every answer a citizen gave about an advisory (history), and the one in
force (the latest) that roll calls and escalation read."""

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigIntPK, UTCDateTime, utcnow

ANSWERS = ("safe", "help")
# How an answer came: an SMS reply, the check-in link's page, or a consul who reached them
# and closed their case ("staff").
CHANNELS = ("sms", "web", "staff")


class CheckinAnswer(Base):
    """One answer, as given: kept when a later one replaces it."""

    __tablename__ = "checkin_answer"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    advisory_id: Mapped[int] = mapped_column(BigIntPK)
    citizen_id: Mapped[int] = mapped_column(BigIntPK)
    answer: Mapped[str] = mapped_column(String(8))
    channel: Mapped[str] = mapped_column(String(8))
    # The citizen's own words (the SMS, or the page's note): sealed like any personal field.
    note_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The consul (staff key name) who recorded it: channel "staff" only.
    given_by: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (
        CheckConstraint("answer IN ('safe', 'help')", name="answer"),
        CheckConstraint("channel IN ('sms', 'web', 'staff')", name="channel"),
        Index("ix_checkin_answer_advisory_citizen", "advisory_id", "citizen_id"),
        # A citizen's words, newest first (the reveal).
        Index("ix_checkin_answer_citizen_id", "citizen_id", "id"),
    )


class Checkin(Base):
    """The answer in force for one citizen and advisory: the latest one wins."""

    __tablename__ = "checkin"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    advisory_id: Mapped[int] = mapped_column(BigIntPK)
    citizen_id: Mapped[int] = mapped_column(BigIntPK)
    answer: Mapped[str] = mapped_column(String(8))
    channel: Mapped[str] = mapped_column(String(8))
    answer_id: Mapped[int] = mapped_column(BigIntPK)  # its CheckinAnswer
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A "help" answer: when the duty staff were told (NULL: not yet; the minute job retries).
    duty_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The consul handling a citizen who needs help (their staff key's name), so that two do
    # not call the same person while nobody calls the next.
    taken_by: Mapped[str | None] = mapped_column(String(100))
    taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A safe pressed on a page while help was in force: kept in the history, not in force (a
    # link can be forwarded or leaked), so a consul reaches them and confirms (channel staff).
    safe_said_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Words added since to the page help in force (past a link's hourly answers): a newer help
    # to read, though not a new answer (`answered_at` keeps the duty notice's clock).
    words_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("advisory_id", "citizen_id"),
        CheckConstraint("answer IN ('safe', 'help')", name="answer"),
        Index("ix_checkin_citizen_id", "citizen_id"),
    )


class InboundSms(Base):
    """Each SMS a provider forwarded, by its id (Twilio's MessageSid), and nothing else: a
    webhook retried or replayed is acted on once."""

    __tablename__ = "inbound_sms"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    provider_ref: Mapped[str] = mapped_column(String(64), unique=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class HelpMessage(Base):
    """A "need help" SMS from a registered number when no check-in was open to file it under
    (before any advisory reached them, or after one ended): kept, and the duty staff told as
    for a check-in's help answer."""

    __tablename__ = "help_message"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    citizen_id: Mapped[int] = mapped_column(BigIntPK, index=True)
    channel: Mapped[str] = mapped_column(String(8))
    note_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When the duty staff were told (NULL: not yet; the minute job retries).
    duty_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
