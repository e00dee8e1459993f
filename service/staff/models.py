from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigIntPK, UTCDateTime, utcnow

# The console and /metrics (anjeon_staff_keys{status="expiring"}) warn this long before a key
# expires: time for an admin to reissue it before a script or a consul is locked out.
EXPIRY_WARNING = timedelta(days=14)


class Role(StrEnum):
    viewer = "viewer"
    consul = "consul"
    admin = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class StaffKey(Base):
    __tablename__ = "staff_key"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the key, so staff can tell keys apart without the secret.
    key_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # When the current secret was issued (created or reissued), and after when it admits
    # nobody (a leaked key is not good for ever); an admin reissues it.
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Who issued the current secret (an admin's key name, or "cli:<user>"), and so has seen
    # it: not to approve their own proposals with it (service/advisories/approval.py).
    issued_by: Mapped[str | None] = mapped_column(String(100), default=None)
    # Where the key's holder hears what became of what they proposed (approved, rejected).
    contact_email: Mapped[str | None] = mapped_column(String(254), default=None)

    @property
    def term_days(self) -> int:
        """The days its current secret was issued for."""
        return max(1, round((self.expires_at - self.issued_at) / timedelta(days=1)))

    @property
    def expires_soon(self) -> bool:
        """Within EXPIRY_WARNING of its end, or past it."""
        return self.expires_at - utcnow() <= EXPIRY_WARNING
