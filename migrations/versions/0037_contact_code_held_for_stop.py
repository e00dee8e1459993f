"""contact_code.held_for_stop: a code held because the number said STOP counts its tries

A probe told numbers that said STOP from others without a key: tries at a held code never ran
out, where those at a sent code do. A code held for a STOP has its limits taken as a sent code's
and its tries counted as one's. Rows from before count as held for a limit.

Revision ID: 0037_contact_code_held_for_stop
Revises: 0036_sms_opt_out_changed
Create Date: 2026-12-06 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0037_contact_code_held_for_stop"
down_revision: str | None = "0036_sms_opt_out_changed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contact_code") as batch:
        batch.add_column(
            sa.Column("held_for_stop", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("contact_code") as batch:
        batch.drop_column("held_for_stop")
