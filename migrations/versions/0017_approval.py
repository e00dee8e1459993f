"""Four eyes, drafts and exercises: advisory statuses draft, pending_approval and rejected;
proposals (a new advisory or a revision waiting for a second person); exercise advisories and
the citizens who opted in to them; a contact for each staff key

Revision ID: 0017_approval
Revises: 0016_checkin
Create Date: 2026-12-03 08:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0017_approval'
down_revision: str | None = '0016_checkin'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

bigint = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
moment = sa.DateTime(timezone=True)
OLD_STATUS = "status IN ('active', 'expired', 'cancelled')"
NEW_STATUS = (
    "status IN ('draft', 'pending_approval', 'rejected', 'active', 'expired', 'cancelled')"
)


def upgrade() -> None:
    op.create_table(
        'advisory_proposal',
        sa.Column('id', bigint, nullable=False),
        sa.Column('advisory_id', bigint, nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('content', sa.JSON(), nullable=False),
        sa.Column('proposed_by', sa.String(length=100), nullable=False),
        sa.Column('proposed_at', moment, nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('decided_by', sa.String(length=100), nullable=True),
        sa.Column('decided_at', moment, nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('issue', 'revise')", name=op.f('ck_advisory_proposal_kind')
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected')",
            name=op.f('ck_advisory_proposal_status'),
        ),
        sa.ForeignKeyConstraint(
            ['advisory_id'],
            ['advisory.id'],
            name=op.f('fk_advisory_proposal_advisory_id_advisory'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_advisory_proposal')),
    )
    op.create_index(
        'ix_advisory_proposal_advisory_id_status',
        'advisory_proposal',
        ['advisory_id', 'status'],
        unique=False,
    )
    op.create_index(
        'uq_advisory_proposal_pending',
        'advisory_proposal',
        ['advisory_id'],
        unique=True,
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    with op.batch_alter_table('advisory', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('exercise', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.drop_constraint(op.f('ck_advisory_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_advisory_status'), NEW_STATUS)
    with op.batch_alter_table('citizen', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('exercises', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table('staff_key', schema=None) as batch_op:
        batch_op.add_column(sa.Column('contact_email', sa.String(length=254), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('staff_key', schema=None) as batch_op:
        batch_op.drop_column('contact_email')
    with op.batch_alter_table('citizen', schema=None) as batch_op:
        batch_op.drop_column('exercises')
    op.execute(
        "UPDATE advisory SET status = 'cancelled' "
        "WHERE status IN ('draft', 'pending_approval', 'rejected')"
    )
    with op.batch_alter_table('advisory', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_advisory_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_advisory_status'), OLD_STATUS)
        batch_op.drop_column('exercise')
    op.drop_index('uq_advisory_proposal_pending', table_name='advisory_proposal')
    op.drop_index('ix_advisory_proposal_advisory_id_status', table_name='advisory_proposal')
    op.drop_table('advisory_proposal')
