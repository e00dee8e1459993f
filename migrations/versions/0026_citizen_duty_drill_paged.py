"""citizen.duty_drill_paged_at: a drill's duty page apart from the real ones

A citizen who answered "2" in a drill was paged about (with [EXERCISE]), and that page set
citizen.duty_paged_at: a real "2" to a real advisory within REPAGE_AFTER (5 minutes) then
waited for the minute job, up to 5 minutes, behind a drill. A drill's page is now kept in its
own column: drills hold up drills, real pages hold up real ones.

Revision ID: 0026_citizen_duty_drill_paged
Revises: 0025_citizen_duty_paged
Create Date: 2026-12-05 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026_citizen_duty_drill_paged"
down_revision: str | None = "0025_citizen_duty_paged"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("citizen") as batch:
        batch.add_column(
            sa.Column("duty_drill_paged_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("citizen") as batch:
        batch.drop_column("duty_drill_paged_at")
