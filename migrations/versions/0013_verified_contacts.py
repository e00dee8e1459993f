"""verified contacts: wanted channels on the citizen, pending contacts with their codes

A contact reaches the citizen row (phone_hash / email_hash, unique) only once its owner typed
the code sent to it: the unique key then means "a contact belongs to the record that verified
it last". Until then it waits in contact_code, sealed, with the code's keyed hash. Records made
before this revision keep their contacts as verified.

Revision ID: 0013_verified_contacts
Revises: 0012_audit_log
Create Date: 2026-12-03 05:10:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013_verified_contacts'
down_revision: str | None = '0012_audit_log'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('citizen', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('wants_sms', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column('wants_email', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.execute('UPDATE citizen SET wants_sms = notify_sms, wants_email = notify_email')
    bigint = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
    op.create_table(
        'contact_code',
        sa.Column('id', bigint, primary_key=True),
        sa.Column('citizen_id', bigint, nullable=False),
        sa.Column('channel', sa.String(8), nullable=False),
        sa.Column('contact_sealed', sa.LargeBinary(), nullable=False),
        sa.Column('contact_hash', sa.String(64), nullable=False),
        sa.Column('code_hash', sa.String(64), nullable=False),
        sa.Column('tries', sa.Integer(), server_default=sa.text('0'), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("channel IN ('sms', 'email')", name=op.f('ck_contact_code_channel')),
        sa.ForeignKeyConstraint(
            ['citizen_id'],
            ['citizen.id'],
            name=op.f('fk_contact_code_citizen_id_citizen'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_code')),
        sa.UniqueConstraint('citizen_id', 'channel', name=op.f('uq_contact_code_citizen_id_channel')),
    )
    op.create_index('ix_contact_code_contact_hash', 'contact_code', ['contact_hash'])


def downgrade() -> None:
    op.drop_index('ix_contact_code_contact_hash', table_name='contact_code')
    op.drop_table('contact_code')
    with op.batch_alter_table('citizen', schema=None) as batch_op:
        batch_op.drop_column('wants_email')
        batch_op.drop_column('wants_sms')
