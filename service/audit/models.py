from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigIntPK, UTCDateTime, utcnow


class AuditEntry(Base):
    """One staff action or read. The database refuses UPDATE and DELETE on this table (a
    trigger on each backend, migration 0012): not even the service can rewrite history."""

    __tablename__ = "audit_entry"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))  # the staff key's name
    role: Mapped[str] = mapped_column(String(16))
    client: Mapped[str] = mapped_column(String(64))  # the client address
    action: Mapped[str] = mapped_column(String(120))  # "GET /v1/advisories/{advisory_id}"
    subject: Mapped[str | None] = mapped_column(String(200))  # what it was about
    reason: Mapped[str | None] = mapped_column(Text)  # staff's stated reason (a reveal)
    status: Mapped[int | None] = mapped_column(Integer)  # the answer's HTTP status, if known

    __table_args__ = (Index("ix_audit_entry_actor_at", "actor", "at"),)
