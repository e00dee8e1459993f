from datetime import datetime

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigIntPK, UTCDateTime, utcnow


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
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("advisory_id", "revision", "citizen_id", "channel"),
        # Erasure cancels a citizen's pending alerts. (Each extra index slows the bulk write.)
        Index("ix_alert_citizen_id_status", "citizen_id", "status"),
    )


class SchedulerLease(Base):
    """Which process runs a singleton job (the sweep) until when: APScheduler runs every job in
    every worker process, so the sweep elects one through this row."""

    __tablename__ = "scheduler_lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
