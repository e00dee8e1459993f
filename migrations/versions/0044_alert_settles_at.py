"""alert.settles_at: when the outcome of a send that may be under way is known at the latest

A dispatcher writes it before its sends begin (the send start + the notifier's settle time,
service/ledger/outbox.py mark_sending); the row comes due no sooner, whether its claim lapses
or a dispatcher that died is taken back. Looked up sooner, a message the provider made late
was missed and sent again.

Revision ID: 0044_alert_settles_at
Revises: 0043_staff_key_issued_by
Create Date: 2026-12-08 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0044_alert_settles_at"
down_revision: str | None = "0043_staff_key_issued_by"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("alert", sa.Column("settles_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_column("alert", "settles_at")
    else:
        # SQLite drops a column in place (3.35+), keeping alert's stored is_open as it is.
        op.execute("ALTER TABLE alert DROP COLUMN settles_at")
