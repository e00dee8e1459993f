"""Safety check-in: answers (history and the one in force), check-in rounds in the ledger,
quiet hours and SMS opt-out on the citizen

alert.checkin_round joins the ledger's key: round n >= 1 is the n-th "are you safe?" request
sent on its own for (advisory, revision, citizen, channel); round 0 is the advisory itself, as
every row so far.

Revision ID: 0016_checkin
Revises: 0015_alert_priority
Create Date: 2026-12-03 07:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0016_checkin'
down_revision: str | None = '0015_alert_priority'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

bigint = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
moment = sa.DateTime(timezone=True)

OLD_KEY = 'uq_alert_advisory_id_revision_citizen_id_channel'
NEW_KEY = 'uq_alert_advisory_id_revision_citizen_id_channel_checkin_round'


def upgrade() -> None:
    op.create_table(
        'checkin',
        sa.Column('id', bigint, nullable=False),
        sa.Column('advisory_id', bigint, nullable=False),
        sa.Column('citizen_id', bigint, nullable=False),
        sa.Column('answer', sa.String(length=8), nullable=False),
        sa.Column('channel', sa.String(length=8), nullable=False),
        sa.Column('answer_id', bigint, nullable=False),
        sa.Column('answered_at', moment, nullable=False),
        sa.Column('duty_notified_at', moment, nullable=True),
        sa.CheckConstraint("answer IN ('safe', 'help')", name=op.f('ck_checkin_answer')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_checkin')),
        sa.UniqueConstraint(
            'advisory_id', 'citizen_id', name=op.f('uq_checkin_advisory_id_citizen_id')
        ),
    )
    op.create_index('ix_checkin_citizen_id', 'checkin', ['citizen_id'], unique=False)
    op.create_table(
        'checkin_answer',
        sa.Column('id', bigint, nullable=False),
        sa.Column('advisory_id', bigint, nullable=False),
        sa.Column('citizen_id', bigint, nullable=False),
        sa.Column('answer', sa.String(length=8), nullable=False),
        sa.Column('channel', sa.String(length=8), nullable=False),
        sa.Column('note_sealed', sa.LargeBinary(), nullable=True),
        sa.Column('answered_at', moment, nullable=False),
        sa.CheckConstraint("answer IN ('safe', 'help')", name=op.f('ck_checkin_answer_answer')),
        sa.CheckConstraint("channel IN ('sms', 'web')", name=op.f('ck_checkin_answer_channel')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_checkin_answer')),
    )
    op.create_index(
        'ix_checkin_answer_advisory_citizen',
        'checkin_answer',
        ['advisory_id', 'citizen_id'],
        unique=False,
    )
    op.create_table(
        'inbound_sms',
        sa.Column('id', bigint, nullable=False),
        sa.Column('provider_ref', sa.String(length=64), nullable=False),
        sa.Column('received_at', moment, nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_sms')),
        sa.UniqueConstraint('provider_ref', name=op.f('uq_inbound_sms_provider_ref')),
    )
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                'checkin_round', sa.SmallInteger(), server_default=sa.text('0'), nullable=False
            )
        )
        batch_op.drop_constraint(OLD_KEY, type_='unique')
        batch_op.create_unique_constraint(
            NEW_KEY, ['advisory_id', 'revision', 'citizen_id', 'channel', 'checkin_round']
        )
    with op.batch_alter_table('citizen', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('quiet_from', sa.String(length=5), server_default='22:00', nullable=True)
        )
        batch_op.add_column(
            sa.Column('quiet_to', sa.String(length=5), server_default='07:00', nullable=True)
        )
        batch_op.add_column(
            sa.Column('sms_opted_out_at', moment, nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table('citizen', schema=None) as batch_op:
        batch_op.drop_column('sms_opted_out_at')
        batch_op.drop_column('quiet_to')
        batch_op.drop_column('quiet_from')
    op.execute('DELETE FROM alert WHERE checkin_round > 0')
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.drop_constraint(NEW_KEY, type_='unique')
        batch_op.create_unique_constraint(
            OLD_KEY, ['advisory_id', 'revision', 'citizen_id', 'channel']
        )
        batch_op.drop_column('checkin_round')
    op.drop_table('inbound_sms')
    op.drop_index('ix_checkin_answer_advisory_citizen', table_name='checkin_answer')
    op.drop_table('checkin_answer')
    op.drop_index('ix_checkin_citizen_id', table_name='checkin')
    op.drop_table('checkin')
