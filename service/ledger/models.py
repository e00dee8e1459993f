import hashlib
from datetime import datetime
from enum import IntEnum

from sqlalchemy import (
    Boolean,
    Computed,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigIntPK, UTCDateTime, utcnow
from service.ledger import states
from service.ledger.priority import DEFAULT as DEFAULT_PRIORITY

_OPEN = states.sql_in(states.OPEN)
# PostgreSQL leaves this share of each page free when rows are written, so that a claim's new
# row version fits beside the old one (a HOT update: no index entries at all).
FILLFACTOR = 70


# A provider's reference for a send (a Twilio SID, an e-mail's Message-ID, a plugin's id) and
# a provider's error code, as stored. A Message-ID carries the sender's domain: at 64 a long
# domain's was refused by PostgreSQL after the e-mail went, and it was sent again and again.
PROVIDER_REF_LENGTH = 255
ERROR_CODE_LENGTH = 16


def stored_provider_ref(ref: str | None) -> str | None:
    """`ref` as the ledger keeps it: one longer than the column (a plugin's) becomes its start
    and a digest of the whole, so that a delivery report naming it still finds it."""
    if ref is None or len(ref) <= PROVIDER_REF_LENGTH:
        return ref
    digest = hashlib.sha256(ref.encode()).hexdigest()[:32]
    return f"{ref[: PROVIDER_REF_LENGTH - 33]}#{digest}"


class Ahead(IntEnum):
    """alert.told_ahead. A row's words are fixed when it is written (every attempt of it sends
    the same, under the same reference); only a row not yet tried may change them."""

    NO = 0  # its words ask, when its advisory asks
    WAITING = 1  # told ahead of a stay and not asked since: the sweep asks once they are there
    ASKED = 2  # told ahead, then asked by a check-in request (a staff round, or once there)


# Spelled as the partial index says it: SQLite uses an index on a condition only when the
# query's WHERE repeats it with the same constant (a bound parameter does not do).
WAITING_SQL = f"told_ahead = {int(Ahead.WAITING)}"


class Alert(Base):
    """The alert ledger (outbox): one row per advisory revision, citizen and channel. The unique
    key is what makes every matching path idempotent: nothing is enqueued twice."""

    __tablename__ = "alert"

    # No foreign keys, on purpose: PostgreSQL checks them row by row, which cut a bulk COPY from
    # ~300,000 to ~90,000 rows/s here. Advisories and citizens are never deleted (erasure keeps
    # a bare row), so these references cannot dangle.
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    advisory_id: Mapped[int] = mapped_column(BigIntPK)
    revision: Mapped[int]
    citizen_id: Mapped[int] = mapped_column(BigIntPK)
    channel: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=states.PENDING)
    # status IN states.OPEN, kept by the database: what the claim's index covers (states.py).
    is_open: Mapped[bool] = mapped_column(
        Boolean, Computed(states.status_in(states.OPEN), persisted=True)
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Its urgency class (service/ledger/priority.py), lowest first: what the claim orders by.
    priority: Mapped[int] = mapped_column(
        SmallInteger, default=DEFAULT_PRIORITY, server_default=text(str(DEFAULT_PRIORITY))
    )
    # Server defaults: the bulk writers (COPY, executemany) name only the columns above.
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # `attempts` when staff last re-queued the row: the retry budget counts from here, while
    # `attempts` itself only grows, so each send (and its delivery reports) has its own number.
    retry_base: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # When the row next needs a dispatcher: a retry's time, or a claim's lease end. NULL = now.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    # Written before a send begins: by then its outcome is known, even from a provider that
    # makes the message late. The row does not come due sooner (outbox.mark_sending).
    settles_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A send may have reached the provider (timeout, crash): look it up before any resend.
    outcome_unknown: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    provider_ref: Mapped[str | None] = mapped_column(String(PROVIDER_REF_LENGTH))
    error_code: Mapped[str | None] = mapped_column(String(ERROR_CODE_LENGTH))
    last_error: Mapped[str | None] = mapped_column(Text)
    segments: Mapped[int | None]
    # The alert on the other channel whose permanent failure caused this one.
    fallback_of: Mapped[int | None] = mapped_column(BigIntPK)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the citizen first opened the alert's details link: who has seen it.
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # 0: the advisory itself. n >= 1: the n-th "are you safe?" request sent on its own (a roll
    # call staff started, or an escalation after no answer), so each round is its own row.
    checkin_round: Mapped[int] = mapped_column(SmallInteger, default=0, server_default=text("0"))
    # Whether the row's own words ask "are you safe?" (Ahead): not when, as matched, the
    # citizen was in reach only by a stay not yet begun (or the advisory was not yet in
    # effect). Such an alert warns them before they go: they are not there, and their silence
    # must not count as no answer. The sweep asks them once they are there (arrivals.py).
    told_ahead: Mapped[int] = mapped_column(
        SmallInteger, default=0, server_default=text(str(Ahead.NO))
    )

    __table_args__ = (
        UniqueConstraint("advisory_id", "revision", "citizen_id", "channel", "checkin_round"),
        # A citizen's alerts (erasure, replies, the routine cap): few rows each, so the status
        # they want is filtered after the look-up, and the claim's status change leaves this
        # index alone. (Each extra index slows the bulk write.)
        Index("ix_alert_citizen_id", "citizen_id"),
        # The dispatcher's claim, most urgent class first, then oldest: only open rows are
        # indexed, so the index stays small once a burst has been sent.
        Index(
            "ix_alert_open_priority",
            "channel",
            "priority",
            "id",
            postgresql_where=text(_OPEN),
            sqlite_where=text(_OPEN),
        ),
        # The rows told ahead of a stay and not asked since, which each sweep looks at
        # (geomatch/arrivals.py): few, and fewer as travellers arrive.
        Index(
            "ix_alert_told_ahead",
            "advisory_id",
            "revision",
            "citizen_id",
            postgresql_where=text(WAITING_SQL),
            sqlite_where=text(WAITING_SQL),
        ),
        {"postgresql_with": {"fillfactor": FILLFACTOR}},
    )
