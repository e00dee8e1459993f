"""foundation: citizens, places, staff keys

Revision ID: 0001_foundation
Revises: 
Create Date: 2026-11-27 21:18:26.216315
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001_foundation'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('citizen',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('public_id', sa.String(length=36), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('name_sealed', sa.LargeBinary(), nullable=True),
    sa.Column('phone_sealed', sa.LargeBinary(), nullable=True),
    sa.Column('phone_hash', sa.String(length=64), nullable=True),
    sa.Column('email_sealed', sa.LargeBinary(), nullable=True),
    sa.Column('email_hash', sa.String(length=64), nullable=True),
    sa.Column('language', sa.String(length=2), nullable=False),
    sa.Column('notify_sms', sa.Boolean(), nullable=False),
    sa.Column('notify_email', sa.Boolean(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=True),
    sa.Column('consent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("language IN ('ko', 'en')", name=op.f('ck_citizen_language')),
    sa.CheckConstraint("status IN ('active', 'erased')", name=op.f('ck_citizen_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_citizen')),
    sa.UniqueConstraint('email_hash', name=op.f('uq_citizen_email_hash')),
    sa.UniqueConstraint('phone_hash', name=op.f('uq_citizen_phone_hash')),
    sa.UniqueConstraint('public_id', name=op.f('uq_citizen_public_id')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_citizen_token_hash'))
    )
    op.create_table('staff_key',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('key_prefix', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_key')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_staff_key_key_hash')),
    sa.UniqueConstraint('name', name=op.f('uq_staff_key_name'))
    )
    op.create_table('citizen_place',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('citizen_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('lat', sa.Float(), nullable=True),
    sa.Column('lon', sa.Float(), nullable=True),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('starts_on', sa.Date(), nullable=True),
    sa.Column('ends_on', sa.Date(), nullable=True),
    sa.CheckConstraint("kind = 'current' OR (starts_on IS NOT NULL AND ends_on IS NOT NULL AND starts_on <= ends_on)", name=op.f('ck_citizen_place_stay_window')),
    sa.CheckConstraint("kind IN ('current', 'stay')", name=op.f('ck_citizen_place_kind')),
    sa.CheckConstraint("source IN ('point', 'address', 'country')", name=op.f('ck_citizen_place_source')),
    sa.CheckConstraint('(lat IS NULL) = (lon IS NULL)', name=op.f('ck_citizen_place_point_complete')),
    sa.CheckConstraint('lat IS NOT NULL OR country IS NOT NULL', name=op.f('ck_citizen_place_somewhere')),
    sa.ForeignKeyConstraint(['citizen_id'], ['citizen.id'], name=op.f('fk_citizen_place_citizen_id_citizen'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_citizen_place'))
    )
    with op.batch_alter_table('citizen_place', schema=None) as batch_op:
        batch_op.create_index('ix_citizen_place_citizen_id', ['citizen_id'], unique=False)
        batch_op.create_index('ix_citizen_place_country', ['country'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('citizen_place', schema=None) as batch_op:
        batch_op.drop_index('ix_citizen_place_country')
        batch_op.drop_index('ix_citizen_place_citizen_id')

    op.drop_table('citizen_place')
    op.drop_table('staff_key')
    op.drop_table('citizen')
