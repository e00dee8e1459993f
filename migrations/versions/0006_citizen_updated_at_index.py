"""citizen updated_at index

Revision ID: 0006_citizen_updated_at_index
Revises: 0005_place_lon_lat_index
Create Date: 2026-11-27 22:03:14.472256
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006_citizen_updated_at_index'
down_revision: str | None = '0005_place_lon_lat_index'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('citizen', schema=None) as batch_op:
        batch_op.create_index('ix_citizen_updated_at', ['updated_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('citizen', schema=None) as batch_op:
        batch_op.drop_index('ix_citizen_updated_at')

