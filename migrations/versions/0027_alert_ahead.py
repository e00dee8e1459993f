"""alert.ahead: an alert told ahead of a stay does not ask "are you safe?"

A citizen in reach of an urgent advisory only by a stay that has not begun (a trip next week)
was asked "are you safe?" like someone there, counted as no answer in the roll call and asked
again by the escalation. The matching paths now mark such a row when they write it; the
dispatcher, the roll call, the escalation and the reading of SMS replies leave it out of the
check-in; each sweep asks those of them who are now there (ix_alert_ahead finds the rows).
Existing rows keep asking as they did (false). advisory.round_started_at: the gap between
staff's check-in rounds is counted from staff's own last round, no longer from the ledger's
latest round, which may be one citizen's ask.

Revision ID: 0027_alert_ahead
Revises: 0026_citizen_duty_drill_paged
Create Date: 2026-12-05 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027_alert_ahead"
down_revision: str | None = "0026_citizen_duty_drill_paged"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: PostgreSQL and SQLite both add it in place, without a table rewrite.
    op.add_column(
        "alert", sa.Column("ahead", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    # The rows told ahead, which each sweep looks at to ask those who arrived: few, so small.
    op.create_index(
        "ix_alert_ahead",
        "alert",
        ["advisory_id", "citizen_id"],
        postgresql_where=sa.text("ahead"),
        sqlite_where=sa.text("ahead"),
    )


    # Staff's own last round, which the gap between rounds is counted from: the ledger's
    # latest round may be one citizen's ask (the escalation's, or an arrival's).
    op.add_column("advisory", sa.Column("round_started_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_column("advisory", "round_started_at")
    else:
        op.execute("ALTER TABLE advisory DROP COLUMN round_started_at")
    op.drop_index("ix_alert_ahead", table_name="alert")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_column("alert", "ahead")
        return
    # SQLite drops a column in place (3.35+), which keeps the stored is_open column as it is.
    op.execute("ALTER TABLE alert DROP COLUMN ahead")
