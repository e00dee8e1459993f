"""staff_key.issued_by: who issued the key's current secret (an admin's key name, or cli:…)

An admin who reissued a colleague's key held its new secret, and approved their own level-4
advisory with it, in the colleague's name (a probe). A key whose secret its proposer issued
less than a day ago may not approve what they proposed. NULL: issued before this.

Revision ID: 0043_staff_key_issued_by
Revises: 0042_advisory_ledger_kept
Create Date: 2026-12-07 20:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0043_staff_key_issued_by"
down_revision: str | None = "0042_advisory_ledger_kept"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("staff_key", sa.Column("issued_by", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("staff_key") as batch:
        batch.drop_column("issued_by")
