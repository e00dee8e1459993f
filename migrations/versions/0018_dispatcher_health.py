"""Faults: a heartbeat row per dispatcher process (short alert leases it renews, and the alerts
of a dead one put back at once) and a circuit breaker per notifier, shared by every process

Revision ID: 0018_dispatcher_health
Revises: 0017_approval
Create Date: 2026-12-03 10:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0018_dispatcher_health'
down_revision: str | None = '0017_approval'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

moment = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'dispatcher_worker',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('host', sa.String(length=128), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('pid_start', sa.BigInteger(), nullable=True),
        sa.Column('started_at', moment, nullable=False),
        sa.Column('heartbeat_at', moment, nullable=False),
        sa.Column('expires_at', moment, nullable=False),
        sa.Column('send_rate', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_dispatcher_worker')),
    )
    op.create_table(
        'notifier_circuit',
        sa.Column('notifier', sa.String(length=32), nullable=False),
        sa.Column('channel', sa.String(length=8), nullable=False),
        sa.Column('state', sa.String(length=10), nullable=False),
        sa.Column('opened', sa.Integer(), nullable=False),
        sa.Column('open_until', moment, nullable=True),
        sa.Column('probe_by', sa.String(length=64), nullable=True),
        sa.Column('changed_at', moment, nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('closed', 'open', 'half_open')", name=op.f('ck_notifier_circuit_state')
        ),
        sa.PrimaryKeyConstraint('notifier', name=op.f('pk_notifier_circuit')),
    )


def downgrade() -> None:
    op.drop_table('notifier_circuit')
    op.drop_table('dispatcher_worker')
