"""covering indexes for matching a new advisory

A new advisory reads the places inside its shapes' boxes, then the status and channels of the
citizens it matched. Both now come from an index alone: the place and citizen rows lie
scattered over their tables, and a cold read of 60,000 of them cost a page read each.
ix_citizen_place_box replaces ix_citizen_place_lon_lat (same leading columns).

Revision ID: 0010_covering_match_indexes
Revises: 0009_alert_dispatch
Create Date: 2026-11-28 03:25:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0010_covering_match_indexes'
down_revision: str | None = '0009_alert_dispatch'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BOX = ['lon', 'lat', 'kind', 'ends_on', 'starts_on', 'citizen_id', 'country']


def upgrade() -> None:
    with op.batch_alter_table('citizen_place', schema=None) as batch_op:
        batch_op.create_index('ix_citizen_place_box', BOX, unique=False)
        batch_op.drop_index('ix_citizen_place_lon_lat')
    with op.batch_alter_table('citizen', schema=None) as batch_op:
        batch_op.create_index(
            'ix_citizen_alerting', ['id', 'status', 'notify_sms', 'notify_email'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('citizen', schema=None) as batch_op:
        batch_op.drop_index('ix_citizen_alerting')
    with op.batch_alter_table('citizen_place', schema=None) as batch_op:
        batch_op.create_index('ix_citizen_place_lon_lat', ['lon', 'lat'], unique=False)
        batch_op.drop_index('ix_citizen_place_box')
