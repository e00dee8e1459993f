"""checkin.taken_by, taken_at: which consul is handling a citizen who needs help

In a crisis several consuls work one roll call. Without a mark of who is calling whom, two
call the same person and nobody calls the next one. A consul takes a help answer; the roll
call shows who took it and can list the help answers nobody has taken.

Revision ID: 0022_checkin_taken
Revises: 0021_help_message
Create Date: 2026-12-04 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022_checkin_taken"
down_revision: str | None = "0021_help_message"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

moment = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("checkin") as batch:
        batch.add_column(sa.Column("taken_by", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("taken_at", moment, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("checkin") as batch:
        batch.drop_column("taken_at")
        batch.drop_column("taken_by")
