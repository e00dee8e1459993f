"""citizen.verified_at: when the record first verified a contact

The hourly purge of unverified records deleted any record with no verified contact a day
after it registered: also a citizen who had verified long ago and then changed their only
phone or e-mail (the old one leaves at once, the new one waits for its code), or whose number
another record verified. Their record, stays and token went, their check-ins and alerts stayed
behind, and the roll call of those advisories failed. The purge now takes only records that
never verified anything.

Existing records count as verified when they hold a verified contact, or were ever alerted
or answered a check-in (only a verified contact is alerted).

Revision ID: 0028_citizen_verified_at
Revises: 0027_alert_told_ahead
Create Date: 2026-12-05 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028_citizen_verified_at"
down_revision: str | None = "0027_alert_told_ahead"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("citizen") as batch:
        batch.add_column(sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE citizen SET verified_at = created_at"
        " WHERE phone_hash IS NOT NULL OR email_hash IS NOT NULL"
        " OR EXISTS (SELECT 1 FROM alert WHERE alert.citizen_id = citizen.id)"
        " OR EXISTS (SELECT 1 FROM checkin WHERE checkin.citizen_id = citizen.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("citizen") as batch:
        batch.drop_column("verified_at")
