"""feed_state.first_polled_at: when a feed was first polled

AnjeonFeedFailing compares the time since a feed's last successful poll with its interval; a
feed that has never succeeded counts from its first poll (it counted as +Inf, and a new hourly
feed raised the ticket five minutes after its first failed poll). Feeds polled before this count
from their last poll.

Revision ID: 0033_feed_first_polled
Revises: 0032_external_message_feed
Create Date: 2026-12-06 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0033_feed_first_polled"
down_revision: str | None = "0032_external_message_feed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("feed_state") as batch:
        batch.add_column(sa.Column("first_polled_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE feed_state SET first_polled_at = last_polled_at")


def downgrade() -> None:
    with op.batch_alter_table("feed_state") as batch:
        batch.drop_column("first_polled_at")
