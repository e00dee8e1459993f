"""help_message: a "need help" SMS from a registered number when no check-in is open

Before, such a message (before any advisory reached the citizen, or after one ended) was
answered "please reply to a check-in message" and dropped: nobody was told. Now it is kept
and the duty staff told, as for a check-in's help answer (the minute job retries).

Revision ID: 0021_help_message
Revises: 0020_place_point_index
Create Date: 2026-12-04 19:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021_help_message"
down_revision: str | None = "0020_place_point_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

bigint = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
moment = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "help_message",
        sa.Column("id", bigint, nullable=False),
        sa.Column("citizen_id", bigint, nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("note_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("received_at", moment, nullable=False),
        sa.Column("duty_notified_at", moment, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_help_message")),
    )
    op.create_index("ix_help_message_citizen_id", "help_message", ["citizen_id"])


def downgrade() -> None:
    op.drop_index("ix_help_message_citizen_id", table_name="help_message")
    op.drop_table("help_message")
