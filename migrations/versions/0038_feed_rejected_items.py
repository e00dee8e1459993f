"""feed_state.rejected_items: how many items of a feed's last document were refused

A probe's consul squatted the MOFA feed's identifiers: the feed's level 4 items were refused,
the poll said "updated", and nothing raised an alarm. The count is kept per feed, exposed as
anjeon_feed_rejected_items and ticketed (AnjeonFeedItemsRejected). Rows from before: not
counted until their next poll.

Revision ID: 0038_feed_rejected_items
Revises: 0037_contact_code_held_for_stop
Create Date: 2026-12-06 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0038_feed_rejected_items"
down_revision: str | None = "0037_contact_code_held_for_stop"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("feed_state") as batch:
        batch.add_column(sa.Column("rejected_items", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feed_state") as batch:
        batch.drop_column("rejected_items")
