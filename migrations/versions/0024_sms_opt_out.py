"""sms_opt_out: STOP belongs to the number, and outlives the record that sent it

Before, a STOP was kept only on the citizen row: when that record changed to another number
(or was erased), the number's STOP was forgotten, and a record that took the number later was
texted again (the provider refuses: Twilio 21610). A STOP from a number no record held was not
kept at all. Existing opt-outs are copied over.

Revision ID: 0024_sms_opt_out
Revises: 0023_checkin_answer_citizen
Create Date: 2026-12-04 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024_sms_opt_out"
down_revision: str | None = "0023_checkin_answer_citizen"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sms_opt_out",
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("phone_hash", name=op.f("pk_sms_opt_out")),
    )
    op.execute(
        "INSERT INTO sms_opt_out (phone_hash, opted_out_at) "
        "SELECT phone_hash, sms_opted_out_at FROM citizen "
        "WHERE phone_hash IS NOT NULL AND sms_opted_out_at IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_table("sms_opt_out")
