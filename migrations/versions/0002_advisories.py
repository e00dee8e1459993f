"""advisories, revisions, external messages

Revision ID: 0002_advisories
Revises: 0001_foundation
Create Date: 2026-11-27 21:28:53.060917
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002_advisories'
down_revision: str | None = '0001_foundation'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('advisory',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('public_id', sa.String(length=36), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('issued_by', sa.String(length=100), nullable=False),
    sa.Column('alerts_citizens', sa.Boolean(), nullable=False),
    sa.Column('level', sa.String(length=8), nullable=False),
    sa.Column('category', sa.String(length=16), nullable=False),
    sa.Column('title_ko', sa.Text(), nullable=True),
    sa.Column('title_en', sa.Text(), nullable=True),
    sa.Column('message_ko', sa.Text(), nullable=True),
    sa.Column('message_en', sa.Text(), nullable=True),
    sa.Column('area', sa.JSON(), nullable=False),
    sa.Column('effective', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("category IN ('security', 'disaster', 'health', 'other')", name=op.f('ck_advisory_category')),
    sa.CheckConstraint("level IN ('1', '2', '3', '4', 'special')", name=op.f('ck_advisory_level')),
    sa.CheckConstraint("status IN ('active', 'expired', 'cancelled')", name=op.f('ck_advisory_status')),
    sa.CheckConstraint('expires IS NULL OR expires > effective', name=op.f('ck_advisory_window')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_advisory')),
    sa.UniqueConstraint('public_id', name=op.f('uq_advisory_public_id'))
    )
    with op.batch_alter_table('advisory', schema=None) as batch_op:
        batch_op.create_index('ix_advisory_status_expires', ['status', 'expires'], unique=False)

    op.create_table('advisory_revision',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('advisory_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('content', sa.JSON(), nullable=False),
    sa.Column('changed_by', sa.String(length=100), nullable=False),
    sa.Column('change', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['advisory_id'], ['advisory.id'], name=op.f('fk_advisory_revision_advisory_id_advisory'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_advisory_revision')),
    sa.UniqueConstraint('advisory_id', 'revision', name=op.f('uq_advisory_revision_advisory_id_revision'))
    )
    op.create_table('external_message',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sender', sa.String(length=255), nullable=False),
    sa.Column('identifier', sa.String(length=255), nullable=False),
    sa.Column('advisory_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('msg_type', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['advisory_id'], ['advisory.id'], name=op.f('fk_external_message_advisory_id_advisory'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_external_message')),
    sa.UniqueConstraint('sender', 'identifier', name=op.f('uq_external_message_sender_identifier'))
    )
    with op.batch_alter_table('external_message', schema=None) as batch_op:
        batch_op.create_index('ix_external_message_advisory_id', ['advisory_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('external_message', schema=None) as batch_op:
        batch_op.drop_index('ix_external_message_advisory_id')

    op.drop_table('external_message')
    op.drop_table('advisory_revision')
    with op.batch_alter_table('advisory', schema=None) as batch_op:
        batch_op.drop_index('ix_advisory_status_expires')

    op.drop_table('advisory')
