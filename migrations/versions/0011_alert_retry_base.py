"""alert.retry_base: the attempt count at the last staff retry

A staff retry used to reset `attempts` to 0, so the first try of the retry carried the same
attempt number as the first try before it, and a late delivery report of the old message was
taken for the new one. Attempts now only grow; the retry budget counts from retry_base, and a
delivery report names the attempt it belongs to.

Revision ID: 0011_alert_retry_base
Revises: 0010_covering_match_indexes
Create Date: 2026-12-03 05:20:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011_alert_retry_base'
down_revision: str | None = '0010_covering_match_indexes'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('retry_base', sa.Integer(), server_default=sa.text('0'), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.drop_column('retry_base')
