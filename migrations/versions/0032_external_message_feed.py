"""external_message.feed: which configured feed a message is from, or stands in for

A feed acted on an advisory staff had imported whenever it had once delivered a message from
the same <sender> (a document names its own sender): a review's feed named the ministry's
sender in a harmless alert, then cancelled the ministry's level 4. A feed now acts on a staff
import only when staff named that feed at the import (`anjeon ingest --feed NAME`, `POST
/v1/advisories/import?feed=NAME`). Messages stored before this name no feed: the feeds' own
advisories are still told apart by their issuer.

Revision ID: 0032_external_message_feed
Revises: 0031_external_message_sent
Create Date: 2026-12-05 23:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0032_external_message_feed"
down_revision: str | None = "0031_external_message_sent"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("external_message") as batch:
        batch.add_column(sa.Column("feed", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("external_message") as batch:
        batch.drop_column("feed")
