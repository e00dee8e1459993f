"""alert ledger without foreign keys

Revision ID: 0008_alert_without_foreign_keys
Revises: 0007_postgis_point_indexes
Create Date: 2026-11-27 22:40:20.529069
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008_alert_without_foreign_keys'
down_revision: str | None = '0007_postgis_point_indexes'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_alert_advisory_id_advisory'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_alert_citizen_id_citizen'), type_='foreignkey')



def downgrade() -> None:
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.create_foreign_key(batch_op.f('fk_alert_citizen_id_citizen'), 'citizen', ['citizen_id'], ['id'], ondelete='CASCADE')
        batch_op.create_foreign_key(batch_op.f('fk_alert_advisory_id_advisory'), 'advisory', ['advisory_id'], ['id'], ondelete='CASCADE')

