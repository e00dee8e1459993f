from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db import Base, BigIntPK, UTCDateTime, utcnow


class Advisory(Base):
    """The current state of an advisory; every earlier state is an AdvisoryRevision."""

    __tablename__ = "advisory"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True)
    revision: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(String(16), default="active")
    source: Mapped[str] = mapped_column(String(16))
    # Feed name for ingested advisories, the staff key's name for manual ones.
    issued_by: Mapped[str] = mapped_column(String(100))
    # False for CAP Test/Draft/System: stored and shown, never sent to citizens.
    alerts_citizens: Mapped[bool] = mapped_column(Boolean, default=True)
    # A drill: sent only to citizens who opted in to exercises, every message marked as one.
    exercise: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    level: Mapped[str] = mapped_column(String(8))
    category: Mapped[str] = mapped_column(String(16))
    title_ko: Mapped[str | None] = mapped_column(Text)
    title_en: Mapped[str | None] = mapped_column(Text)
    message_ko: Mapped[str | None] = mapped_column(Text)
    message_en: Mapped[str | None] = mapped_column(Text)
    area: Mapped[dict[str, Any]] = mapped_column(JSON)
    effective: Mapped[datetime] = mapped_column(UTCDateTime())
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When staff last started a check-in round (service/checkin/rollcall.py): the next waits
    # ROUND_GAP. Kept here, not read off the ledger, whose later rounds are also the
    # escalation's and the sweep's asks of one citizen at a time.
    round_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A while after it ended its alert rows and check-in answers are deleted
    # (service/checkin/retention.py): the figures staff saw of them are kept here first, and
    # ledger_forgotten_at says when the last row went. None: the rows are all still there.
    ledger_kept: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    ledger_forgotten_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def rows_forgotten_at(self) -> datetime | None:
        """When its rows began to be deleted, their figures kept (ledger_kept); None: not yet."""
        return None if self.ledger_kept is None else datetime.fromisoformat(self.ledger_kept["at"])

    revisions: Mapped[list["AdvisoryRevision"]] = relationship(
        back_populates="advisory", order_by="AdvisoryRevision.revision", cascade="all"
    )
    # Read only: proposals are written by service/advisories/approval.py.
    proposals: Mapped[list["AdvisoryProposal"]] = relationship(
        order_by="AdvisoryProposal.id", viewonly=True
    )

    __table_args__ = (
        CheckConstraint(
            "status IN ('draft', 'pending_approval', 'rejected', 'active', 'expired', 'cancelled')",
            name="status",
        ),
        CheckConstraint("level IN ('1', '2', '3', '4', 'special')", name="level"),
        CheckConstraint("category IN ('security', 'disaster', 'health', 'other')", name="category"),
        CheckConstraint("expires IS NULL OR expires > effective", name="window"),
        Index("ix_advisory_status_expires", "status", "expires"),
    )


class AdvisoryRevision(Base):
    """What an advisory said at one revision, readable after later changes."""

    __tablename__ = "advisory_revision"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    advisory_id: Mapped[int] = mapped_column(ForeignKey("advisory.id", ondelete="CASCADE"))
    revision: Mapped[int]
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    changed_by: Mapped[str] = mapped_column(String(100))
    change: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    advisory: Mapped[Advisory] = relationship(back_populates="revisions")

    __table_args__ = (UniqueConstraint("advisory_id", "revision"),)


class AdvisoryProposal(Base):
    """A new advisory or a revision waiting for a second person (four eyes): what it would say,
    who proposed it, and what became of it. An advisory has at most one pending."""

    __tablename__ = "advisory_proposal"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    advisory_id: Mapped[int] = mapped_column(ForeignKey("advisory.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))  # "issue" | "revise"
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    proposed_by: Mapped[str] = mapped_column(String(100))
    proposed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    decided_by: Mapped[str | None] = mapped_column(String(100))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("kind IN ('issue', 'revise')", name="kind"),
        CheckConstraint("status IN ('pending', 'approved', 'rejected')", name="status"),
        Index("ix_advisory_proposal_advisory_id_status", "advisory_id", "status"),
        # One proposal waits per advisory at most, whatever two requests race to do.
        Index(
            "uq_advisory_proposal_pending",
            "advisory_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )


class ExternalMessage(Base):
    """A feed message already applied, by (sender, identifier): a re-import changes nothing."""

    __tablename__ = "external_message"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    sender: Mapped[str] = mapped_column(String(255))
    identifier: Mapped[str] = mapped_column(String(255))
    advisory_id: Mapped[int] = mapped_column(ForeignKey("advisory.id", ondelete="CASCADE"))
    msg_type: Mapped[str] = mapped_column(String(16))
    # Its <sent> (CAP, NWS): an Update older than the newest applied is not applied.
    sent: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The configured feed whose message this is: the feed that polled it, or the one staff
    # named when importing its document by hand while it was down (then that feed, back, takes
    # the advisory over). Null for a staff import that named none: no feed acts on it.
    feed: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("sender", "identifier"),
        Index("ix_external_message_advisory_id", "advisory_id"),
    )


class FeedState(Base):
    """What the poller remembers of each configured feed between polls."""

    __tablename__ = "feed_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    etag: Mapped[str | None] = mapped_column(String(255))
    last_modified: Mapped[str | None] = mapped_column(String(64))
    first_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    last_detail: Mapped[str | None] = mapped_column(Text)
    # The last document's SHA-256, and when a poll first brought one different from the one
    # before (a 304 is no change): a feed whose upstream froze still polls without error.
    content_hash: Mapped[str | None] = mapped_column(String(64))
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Items of the last document read that were refused (malformed, or under an identifier
    # another source holds): each a warning that reached nobody (anjeon_feed_rejected_items).
    rejected_items: Mapped[int | None] = mapped_column(Integer)
    # The message ids, [sender, identifier], that the last document read listed at a level
    # that makes an advisory; None when no whole document was read (one page of several).
    # A feed's advisory with no end of its own that is not in it is "unlisted" (feeds/listing.py).
    listed: Mapped[list[list[str]] | None] = mapped_column(JSON)
