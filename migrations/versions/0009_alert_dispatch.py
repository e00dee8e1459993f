"""alert dispatch state

Revision ID: 0009_alert_dispatch
Revises: 0008_alert_without_foreign_keys
Create Date: 2026-11-27 23:33:24.441385
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0009_alert_dispatch'
down_revision: str | None = '0008_alert_without_foreign_keys'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch_op.add_column(sa.Column('due_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('outcome_unknown', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('provider_ref', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('error_code', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('last_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('segments', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('fallback_of', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_alert_open', ['channel', 'id'], unique=False, postgresql_where=sa.text("status IN ('pending', 'retry_wait', 'claimed')"), sqlite_where=sa.text("status IN ('pending', 'retry_wait', 'claimed')"))



def downgrade() -> None:
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.drop_index('ix_alert_open', postgresql_where=sa.text("status IN ('pending', 'retry_wait', 'claimed')"), sqlite_where=sa.text("status IN ('pending', 'retry_wait', 'claimed')"))
        batch_op.drop_column('opened_at')
        batch_op.drop_column('updated_at')
        batch_op.drop_column('delivered_at')
        batch_op.drop_column('sent_at')
        batch_op.drop_column('fallback_of')
        batch_op.drop_column('segments')
        batch_op.drop_column('last_error')
        batch_op.drop_column('error_code')
        batch_op.drop_column('provider_ref')
        batch_op.drop_column('outcome_unknown')
        batch_op.drop_column('claimed_by')
        batch_op.drop_column('due_at')
        batch_op.drop_column('attempts')

