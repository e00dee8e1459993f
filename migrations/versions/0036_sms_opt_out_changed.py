"""sms_opt_out.changed_at: when the number last said STOP or START

A send refused with Twilio 21610 is kept as the number's STOP, written up to half a second after
the refusal; a START heard in between was undone. A refusal of a send begun before the last
START now changes nothing. Rows from before count as changed never: a refusal applies to them.

Revision ID: 0036_sms_opt_out_changed
Revises: 0035_checkin_confirmed_safe
Create Date: 2026-12-06 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0036_sms_opt_out_changed"
down_revision: str | None = "0035_checkin_confirmed_safe"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sms_opt_out") as batch:
        batch.add_column(sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sms_opt_out") as batch:
        batch.drop_column("changed_at")
