"""alert.asked: whether a sent alert asked "are you safe?"

Every alert of an asking advisory (levels 3, 4, special) asked each citizen it reached,
including those reached only by a trip still to come: a citizen in Paris with a trip to Japan
next month was asked whether they were safe in Tokyo, and counted in Japan's roll call as "no
answer". The dispatcher now asks only those who may be there now (a country where they are
now is one the area touches) and records here whether it asked; the roll call, replies and
asking again leave out the rows that did not ask. NULL counts as asked.

Revision ID: 0027_alert_asked
Revises: 0026_citizen_duty_drill_paged
Create Date: 2026-12-05 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027_alert_asked"
down_revision: str | None = "0026_citizen_duty_drill_paged"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE on both (SQLite 3.35+ drops a column in place): a batch copy of the ledger
# would be slow, and SQLite refuses to copy its generated column (is_open).
def upgrade() -> None:
    op.add_column("alert", sa.Column("asked", sa.Boolean(), nullable=True))


def downgrade() -> None:
    op.drop_column("alert", "asked")
