"""alert.told_ahead: an alert told ahead of a stay does not ask "are you safe?"; staff's rounds

A citizen in reach of an urgent advisory only by a stay that has not begun (a trip next week)
was asked "are you safe?" like someone there, counted as no answer in the roll call and asked
again by the escalation. The matching paths now say so when they write the ledger row
(alert.told_ahead: 0 its words ask, 1 told ahead and not asked since, 2 told ahead and asked
since); the dispatcher, the roll call, the escalation and the reading of SMS replies leave such
a row out of the check-in, and each sweep asks those who are now there (ix_alert_told_ahead
holds the rows still waiting). Existing rows keep asking as they did (0).

advisory.round_started_at: the gap between staff's check-in rounds is counted from staff's own
last round, no longer from the ledger's latest round, which may be one citizen's ask.

Revision ID: 0027_alert_told_ahead
Revises: 0026_citizen_duty_drill_paged
Create Date: 2026-12-05 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027_alert_told_ahead"
down_revision: str | None = "0026_citizen_duty_drill_paged"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING = "told_ahead = 1"


def upgrade() -> None:
    # A constant default: PostgreSQL and SQLite both add it in place, without a table rewrite.
    op.add_column(
        "alert",
        sa.Column("told_ahead", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.create_index(
        "ix_alert_told_ahead",
        "alert",
        ["advisory_id", "revision", "citizen_id"],
        postgresql_where=sa.text(WAITING),
        sqlite_where=sa.text(WAITING),
    )
    op.add_column("advisory", sa.Column("round_started_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_index("ix_alert_told_ahead", table_name="alert")
    for table, column in (("advisory", "round_started_at"), ("alert", "told_ahead")):
        if op.get_bind().dialect.name == "postgresql":
            op.drop_column(table, column)
        else:
            # SQLite drops a column in place (3.35+), keeping alert's stored is_open as it is.
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
