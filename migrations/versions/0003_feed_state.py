"""feed state

Revision ID: 0003_feed_state
Revises: 0002_advisories
Create Date: 2026-11-27 21:38:02.161307
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003_feed_state'
down_revision: str | None = '0002_advisories'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('feed_state',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('etag', sa.String(length=255), nullable=True),
    sa.Column('last_modified', sa.String(length=64), nullable=True),
    sa.Column('last_polled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_success_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_outcome', sa.String(length=16), nullable=True),
    sa.Column('last_detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_feed_state'))
    )


def downgrade() -> None:
    op.drop_table('feed_state')
