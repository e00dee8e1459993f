"""staff_key.issued_at, expires_at: a staff key admits nobody after its day

A staff key worked until someone revoked it: one copied from a laptop or a shared script years
ago still sent mass alerts. Keys now expire (staff_key_life_days, 90 by default) and an admin
reissues them (a new secret, the old one dead at once). Keys that exist when this runs get 90
days from now, so nobody is locked out the day the service is upgraded (and
AnjeonStaffKeysExpiring opens a ticket two weeks before they end together; `anjeon staff
reissue` at the server works whatever state the keys are in).

Revision ID: 0030_staff_key_expiry
Revises: 0029_contact_code_held
Create Date: 2026-12-05 16:00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0030_staff_key_expiry"
down_revision: str | None = "0029_contact_code_held"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXISTING_KEYS_LIFE = timedelta(days=90)


def upgrade() -> None:
    with op.batch_alter_table("staff_key") as batch:
        batch.add_column(sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    staff_key = sa.table(
        "staff_key",
        sa.column("issued_at", sa.DateTime(timezone=True)),
        sa.column("expires_at", sa.DateTime(timezone=True)),
    )
    # In UTC: PostgreSQL takes the zone; SQLite stores the wall clock, in UTC as the service does.
    now = datetime.now(UTC)
    op.execute(staff_key.update().values(issued_at=now, expires_at=now + EXISTING_KEYS_LIFE))
    with op.batch_alter_table("staff_key") as batch:
        batch.alter_column("issued_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("staff_key") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("issued_at")
