"""checkin.safe_said_at, checkin_answer.given_by and the "staff" channel: a help stays in force
until the citizen's own phone says safe or a consul who reached them confirms it

A safe pressed on a check-in page after a help became the answer in force, and the citizen left
the untaken helps unseen: a forwarded or leaked link could do it. Such a safe is now kept in the
history and marked on the answer in force (`safe_said_at`); a consul who reaches them records a
safe with channel "staff", named in `given_by`.

Revision ID: 0035_checkin_confirmed_safe
Revises: 0034_feed_changed
Create Date: 2026-12-06 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0035_checkin_confirmed_safe"
down_revision: str | None = "0034_feed_changed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_CHANNEL = "channel IN ('sms', 'web')"
NEW_CHANNEL = "channel IN ('sms', 'web', 'staff')"


def upgrade() -> None:
    with op.batch_alter_table("checkin") as batch:
        batch.add_column(sa.Column("safe_said_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("words_at", sa.DateTime(timezone=True), nullable=True))
    # On PostgreSQL the new check scans every answer under a lock that holds SMS and page
    # answers meanwhile (a review; the longer the more answers are kept): migrate outside a
    # crisis. NOT VALID would spare the scan, but alembic check cannot reflect such a check,
    # and a VALIDATE committed apart left the revision half-applied when it failed.
    with op.batch_alter_table("checkin_answer") as batch:
        batch.add_column(sa.Column("given_by", sa.String(100), nullable=True))
        batch.drop_constraint(op.f("ck_checkin_answer_channel"), type_="check")
        batch.create_check_constraint(op.f("ck_checkin_answer_channel"), NEW_CHANNEL)


def downgrade() -> None:
    # A consul's confirmations have no channel in the old schema: they become page answers.
    op.execute("UPDATE checkin SET channel = 'web' WHERE channel = 'staff'")
    op.execute("UPDATE checkin_answer SET channel = 'web' WHERE channel = 'staff'")
    with op.batch_alter_table("checkin_answer") as batch:
        batch.drop_constraint(op.f("ck_checkin_answer_channel"), type_="check")
        batch.create_check_constraint(op.f("ck_checkin_answer_channel"), OLD_CHANNEL)
        batch.drop_column("given_by")
    with op.batch_alter_table("checkin") as batch:
        batch.drop_column("words_at")
        batch.drop_column("safe_said_at")
