from datetime import date, datetime, timedelta

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ColumnElement,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    and_,
    false,
    or_,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db import Base, BigIntPK, UTCDateTime, utcnow

# Level 1-2 alerts wait out these hours where the citizen is, unless they chose others.
QUIET_HOURS_DEFAULT = ("22:00", "07:00")


class Citizen(Base):
    """A registered person. Personal fields are sealed (see service.privacy); after erasure only
    the row's id and timestamps remain, so alert records that point at it stay consistent."""

    __tablename__ = "citizen"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    name_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    email_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    email_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    language: Mapped[str] = mapped_column(String(2))
    # Alerted on: a channel the citizen wants whose contact is verified (what matching reads).
    notify_sms: Mapped[bool] = mapped_column(Boolean, default=False)
    notify_email: Mapped[bool] = mapped_column(Boolean, default=False)
    # The channels the citizen chose; each is alerted once its contact is verified.
    wants_sms: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    wants_email: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When a contact was first verified: a record that never was is purged after a day, one
    # that was is kept while it has none (a new phone waiting for its code).
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Level 1-2 alerts wait out this window of the local time where the citizen is ("HH:MM";
    # both NULL: none). The default is 22:00-07:00.
    quiet_from: Mapped[str | None] = mapped_column(
        String(5), default=QUIET_HOURS_DEFAULT[0], server_default=QUIET_HOURS_DEFAULT[0]
    )
    quiet_to: Mapped[str | None] = mapped_column(
        String(5), default=QUIET_HOURS_DEFAULT[1], server_default=QUIET_HOURS_DEFAULT[1]
    )
    # The citizen answered STOP (or the like) by SMS: carriers block our texts to the number
    # until START, so nothing is sent there; their e-mail still gets everything.
    sms_opted_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the duty staff were last paged about this citizen's check-in help (a help within
    # checkin.duty.repage_after of it waits for the minute job: 1, 2, 1, 2 … pages once), and
    # about their help in a drill, apart: a drill's page must never hold up a real one.
    duty_paged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duty_drill_paged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Opted in to drills: exercise advisories reach only these citizens.
    exercises: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    places: Mapped[list["CitizenPlace"]] = relationship(
        back_populates="citizen",
        cascade="all, delete-orphan",
        order_by="CitizenPlace.id",
    )

    __table_args__ = (
        # The sweep re-reads only citizens changed since its last read.
        Index("ix_citizen_updated_at", "updated_at"),
        # Whom a new advisory alerts, and how, read from the index alone (rows are wide).
        Index("ix_citizen_alerting", "id", "status", "notify_sms", "notify_email"),
        CheckConstraint("status IN ('active', 'erased')", name="status"),
        CheckConstraint("language IN ('ko', 'en')", name="language"),
    )


def alerted_sql(alias: str) -> str:
    """SQL: the citizen (table alias `alias`) is alerted: active, with a verified contact on a
    channel they chose. Only they count where reach is counted (preview, four eyes, matches,
    registry counts): sign-ups that never verified a contact are nobody we can tell, and were
    an anonymous way to push every advisory of a country into waiting for a second approver."""
    return f"{alias}.status = 'active' AND ({alias}.notify_sms OR {alias}.notify_email)"


def is_alerted() -> ColumnElement[bool]:
    """alerted_sql(), as an expression over Citizen."""
    return and_(Citizen.status == "active", or_(Citizen.notify_sms, Citizen.notify_email))


# A record is established once it has a verified phone (a SIM that received our code; the
# number is kept only once verified) or has had a verified contact this long. An e-mail-only
# record made today costs a script a catch-all domain: a probe verified 45 in minutes, placed
# them in a crisis and cried for help on each. The duty staff hear of such cries one by one
# only within a part of the hour's notices, and the roll call marks them.
ESTABLISHED_AFTER = timedelta(hours=24)


def is_established(now: datetime) -> ColumnElement[bool]:
    """SQL over Citizen: the record is established (ESTABLISHED_AFTER) at `now`."""
    return or_(
        Citizen.phone_hash.is_not(None),
        and_(Citizen.verified_at.is_not(None), Citizen.verified_at <= now - ESTABLISHED_AFTER),
    )


def established(citizen: Citizen, now: datetime) -> bool:
    """is_established() of one record in hand."""
    verified = citizen.verified_at
    return citizen.phone_hash is not None or (
        verified is not None and verified <= now - ESTABLISHED_AFTER
    )


class CitizenPlace(Base):
    """Where a citizen is (kind 'current', no dates) or will be (kind 'stay', a date window).
    A point carries the country it lies in; a country-only place has no point."""

    __tablename__ = "citizen_place"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    citizen_id: Mapped[int] = mapped_column(ForeignKey("citizen.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(8))
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    country: Mapped[str | None] = mapped_column(String(2))
    starts_on: Mapped[date | None] = mapped_column(Date)
    ends_on: Mapped[date | None] = mapped_column(Date)

    citizen: Mapped[Citizen] = relationship(back_populates="places")

    __table_args__ = (
        CheckConstraint("kind IN ('current', 'stay')", name="kind"),
        CheckConstraint("source IN ('point', 'address', 'country')", name="source"),
        CheckConstraint("(lat IS NULL) = (lon IS NULL)", name="point_complete"),
        CheckConstraint("lat IS NOT NULL OR country IS NOT NULL", name="somewhere"),
        CheckConstraint(
            "kind = 'current' OR (starts_on IS NOT NULL AND ends_on IS NOT NULL "
            "AND starts_on <= ends_on)",
            name="stay_window",
        ),
        Index("ix_citizen_place_citizen_id", "citizen_id"),
        Index("ix_citizen_place_country", "country"),
        # A new advisory reads only the places inside its shapes' boxes, from this index alone
        # (covering: the rows themselves lie scattered over the table, a page read each).
        Index(
            "ix_citizen_place_box",
            "lon",
            "lat",
            "kind",
            "ends_on",
            "starts_on",
            "citizen_id",
            "country",
        ),
    )


class ContactCode(Base):
    """A contact waiting for its owner to type the code sent to it: sealed, with the code's keyed
    hash, its end and the wrong tries so far. Verified, it moves onto the citizen row."""

    __tablename__ = "contact_code"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    citizen_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("citizen.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(8))
    contact_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    contact_hash: Mapped[str] = mapped_column(String(64))
    code_hash: Mapped[str] = mapped_column(String(64))
    tries: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Never sent: the contact's cooldown held it (a code went to that contact a moment ago, for
    # this record or another). Nobody can know it, so it verifies nothing, and a try at it does
    # not count against the contact: two sign-ups with a stranger's number and ten wrong tries
    # locked the stranger out of their own code for an hour, without one SMS sent.
    held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Held because the number said STOP, its limits taken as a sent code's: a try at it counts
    # as one at a sent code (a held one's tries did not, and told STOPped numbers apart).
    held_for_stop: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The client network whose share of unverified codes this one took (rate_limit_client_
    # unverified, by its keyed hash): given back once the code is verified. NULL: none taken.
    asked_from: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        UniqueConstraint("citizen_id", "channel"),
        CheckConstraint("channel IN ('sms', 'email')", name="channel"),
        Index("ix_contact_code_contact_hash", "contact_hash"),
    )


class SmsOptOut(Base):
    """A number that replied STOP (by its keyed hash, as `citizen.phone_hash`): the provider
    refuses our texts to it until it says START, whichever record holds it, or none. Kept
    apart from the citizen so that it outlives a record that changes number or is erased
    (a hash, with nothing that names the person)."""

    __tablename__ = "sms_opt_out"

    phone_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    # NULL: it said START after (the row stays: the one lock STOP and START take in turn).
    opted_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the number last said STOP or START: a provider's refusal of a send started before
    # a START is older news than the START.
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
