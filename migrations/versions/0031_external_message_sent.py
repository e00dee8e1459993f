"""external_message.sent: a CAP or NWS Update older than one already applied is not applied

A feed probe sent an advisory's newer Update, then an older one that had been held up: the
older was applied after the newer, bringing back replaced words and alerting everyone again.
Messages stored before this have no time: the next Update is compared with those that have.

Revision ID: 0031_external_message_sent
Revises: 0030_staff_key_expiry
Create Date: 2026-12-05 23:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0031_external_message_sent"
down_revision: str | None = "0030_staff_key_expiry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("external_message") as batch:
        batch.add_column(sa.Column("sent", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("external_message") as batch:
        batch.drop_column("sent")
