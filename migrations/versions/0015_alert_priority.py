"""alert.priority: the dispatcher claims the most urgent class first, then the oldest

Each alert row carries its urgency class (service/ledger/priority.py), set when it is enqueued;
the claim's partial index over open rows becomes (channel, priority, id). Rows that are open,
or that staff may put back in the queue, get the class of their advisory's level here (the
classes as they were at this revision); settled rows keep the default, level 1's.

Revision ID: 0015_alert_priority
Revises: 0014_coastal_countries
Create Date: 2026-12-04 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0015_alert_priority'
down_revision: str | None = '0014_coastal_countries'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "status IN ('pending', 'retry_wait', 'claimed')"
# A cancellation notice is the cancelled advisory's last revision; a level 1-2 one goes last (5),
# a level 3, 4 or special one as urgently as the advisory.
BACKFILL = """
UPDATE alert SET priority = COALESCE((
    SELECT CASE
        WHEN a.status = 'cancelled' AND a.revision = alert.revision AND a.level IN ('1', '2')
            THEN 5
        WHEN a.level IN ('4', 'special') THEN 1
        WHEN a.level = '3' THEN 2
        WHEN a.level = '2' THEN 3
        ELSE 4
    END
    FROM advisory a WHERE a.id = alert.advisory_id
), 4)
WHERE status IN ('pending', 'retry_wait', 'claimed', 'failed', 'undelivered', 'expired')
"""


def upgrade() -> None:
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('priority', sa.SmallInteger(), server_default=sa.text('4'), nullable=False)
        )
    op.execute(BACKFILL)
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.create_index(
            'ix_alert_open_priority',
            ['channel', 'priority', 'id'],
            unique=False,
            postgresql_where=sa.text(OPEN),
            sqlite_where=sa.text(OPEN),
        )
        batch_op.drop_index(
            'ix_alert_open', postgresql_where=sa.text(OPEN), sqlite_where=sa.text(OPEN)
        )


def downgrade() -> None:
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.create_index(
            'ix_alert_open',
            ['channel', 'id'],
            unique=False,
            postgresql_where=sa.text(OPEN),
            sqlite_where=sa.text(OPEN),
        )
        batch_op.drop_index(
            'ix_alert_open_priority', postgresql_where=sa.text(OPEN), sqlite_where=sa.text(OPEN)
        )
        batch_op.drop_column('priority')
