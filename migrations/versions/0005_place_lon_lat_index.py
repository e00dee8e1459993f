"""citizen place lon lat index

Revision ID: 0005_place_lon_lat_index
Revises: 0004_alert_ledger
Create Date: 2026-11-27 22:01:50.847991
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005_place_lon_lat_index'
down_revision: str | None = '0004_alert_ledger'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('citizen_place', schema=None) as batch_op:
        batch_op.create_index('ix_citizen_place_lon_lat', ['lon', 'lat'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('citizen_place', schema=None) as batch_op:
        batch_op.drop_index('ix_citizen_place_lon_lat')

