"""alert.provider_ref: up to 255 characters (was 64)

An e-mail's reference is its Message-ID, which carries the sender's domain: with a long domain
it passed 64 characters once alert ids grew, PostgreSQL refused the record of a send that had
gone, and the e-mail was sent again on every lease, without end (a review). Longer references
(a plugin's) are kept as their start and a digest (ledger/models.stored_provider_ref).
PostgreSQL widens a varchar in place, without rewriting the table; SQLite copies it.

Revision ID: 0040_alert_provider_ref_255
Revises: 0039_feed_listed
Create Date: 2026-12-07 10:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0040_alert_provider_ref_255"
down_revision: str | None = "0039_feed_listed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _widen(64, 255)


def downgrade() -> None:
    # References past 64 characters are cut to their start (a delivery report may then miss).
    alert = sa.table("alert", sa.column("provider_ref", sa.String))
    op.execute(
        alert.update()
        .where(sa.func.length(alert.c.provider_ref) > 64)
        .values(provider_ref=sa.func.substr(alert.c.provider_ref, 1, 64))
    )
    _widen(255, 64)


def _widen(before: int, after: int) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "alert",
            "provider_ref",
            existing_type=sa.String(before),
            type_=sa.String(after),
            existing_nullable=True,
        )
        return
    # SQLite: a batch copy of the table cannot insert into its stored is_open; a new column,
    # then the old one dropped and the new one renamed, all in place (3.35+).
    op.add_column("alert", sa.Column("provider_ref_new", sa.String(after), nullable=True))
    op.execute("UPDATE alert SET provider_ref_new = provider_ref")
    op.execute("ALTER TABLE alert DROP COLUMN provider_ref")
    op.execute("ALTER TABLE alert RENAME COLUMN provider_ref_new TO provider_ref")
