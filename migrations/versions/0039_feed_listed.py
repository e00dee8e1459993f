"""feed_state.listed: the message ids (sender, identifier) the feed's last whole document listed

An advisory with no end of its own (a MOFA travel alarm, a State Department level) stood for
ever once its source stopped listing it, or listed it at a level that makes no advisory: new
registrants there were still told of it. The listing lets staff see which of a feed's
advisories its source no longer lists (GET /v1/feeds, anjeon_feed_unlisted_advisories,
AnjeonFeedAdvisoriesUnlisted) and end them. Rows from before: nothing listed until the next
document read.

Revision ID: 0039_feed_listed
Revises: 0038_feed_rejected_items
Create Date: 2026-12-07 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0039_feed_listed"
down_revision: str | None = "0038_feed_rejected_items"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("feed_state") as batch:
        batch.add_column(sa.Column("listed", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feed_state") as batch:
        batch.drop_column("listed")
