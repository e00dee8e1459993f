"""feed_state.content_hash and changed_at: when a feed's document last changed

A feed whose upstream froze (the same document, or 304 Not Modified, poll after poll) looked
healthy: every poll succeeded. A feed with `stale_after_s` in the feeds file is stale once its
document has not changed for that long (GET /v1/feeds, the console, AnjeonFeedStale). Feeds
polled before this count from their next change, or from their next poll.

Revision ID: 0034_feed_changed
Revises: 0033_feed_first_polled
Create Date: 2026-12-06 04:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0034_feed_changed"
down_revision: str | None = "0033_feed_first_polled"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("feed_state") as batch:
        batch.add_column(sa.Column("content_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feed_state") as batch:
        batch.drop_column("changed_at")
        batch.drop_column("content_hash")
