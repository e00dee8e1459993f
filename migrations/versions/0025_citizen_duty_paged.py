"""citizen.duty_paged_at: when the duty staff were last paged about a citizen's check-in help

A citizen (or whoever holds their check-in link) who answers 1, 2, 1, 2 … paged the duty staff
at every 2: an attacker's probe sent 20 pages with 20 SMS. A help answer within
REPAGE_AFTER of the last page about that citizen now waits for the minute job, which sends
it once that has passed (never dropped).

Revision ID: 0025_citizen_duty_paged
Revises: 0024_sms_opt_out
Create Date: 2026-12-04 22:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025_citizen_duty_paged"
down_revision: str | None = "0024_sms_opt_out"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("citizen") as batch:
        batch.add_column(sa.Column("duty_paged_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("citizen") as batch:
        batch.drop_column("duty_paged_at")
