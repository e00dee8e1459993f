"""advisory.ledger_kept, advisory.ledger_forgotten_at: an ended advisory's rows forgotten

A while after an advisory ended (ledger_retention_days), its alert rows, check-in answers and
the answers in force are deleted by the forget-ended-ledgers job. Before the first row goes, the
figures staff saw (delivery counts by revision, the roll call's counts by answer and country)
are kept in ledger_kept; ledger_forgotten_at says when the last row went.

Revision ID: 0042_advisory_ledger_kept
Revises: 0041_contact_code_asked_from
Create Date: 2026-12-07 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0042_advisory_ledger_kept"
down_revision: str | None = "0041_contact_code_asked_from"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("advisory", sa.Column("ledger_kept", sa.JSON(), nullable=True))
    op.add_column("advisory", sa.Column("ledger_forgotten_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("advisory") as batch:
        batch.drop_column("ledger_forgotten_at")
        batch.drop_column("ledger_kept")
