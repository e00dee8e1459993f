"""audit log: append-only, enforced by the database

Every staff action and every staff read of personal data. A trigger on each backend refuses
UPDATE and DELETE, so not even the service (or a bug in it) can rewrite what was recorded.

Revision ID: 0012_audit_log
Revises: 0011_alert_retry_base
Create Date: 2026-12-03 05:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012_audit_log'
down_revision: str | None = '0011_alert_retry_base'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REFUSAL = 'the audit log is append-only'


def upgrade() -> None:
    bigint = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
    op.create_table(
        'audit_entry',
        sa.Column('id', bigint, primary_key=True),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.String(100), nullable=False),
        sa.Column('role', sa.String(16), nullable=False),
        sa.Column('client', sa.String(64), nullable=False),
        sa.Column('action', sa.String(120), nullable=False),
        sa.Column('subject', sa.String(200), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('status', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_entry')),
    )
    op.create_index('ix_audit_entry_actor_at', 'audit_entry', ['actor', 'at'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(
            "CREATE OR REPLACE FUNCTION audit_entry_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{_REFUSAL}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_entry_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
            "ON audit_entry FOR EACH STATEMENT EXECUTE FUNCTION audit_entry_refuse()"
        )
    else:
        for event in ('UPDATE', 'DELETE'):
            op.execute(
                f"CREATE TRIGGER audit_entry_no_{event.lower()} BEFORE {event} ON audit_entry "
                f"BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP TRIGGER audit_entry_append_only ON audit_entry')
        op.execute('DROP FUNCTION audit_entry_refuse()')
    op.drop_index('ix_audit_entry_actor_at', table_name='audit_entry')
    op.drop_table('audit_entry')
