"""contact_code.asked_from: the client network a sent code counts against

A code sent for a client network counts in that network's share of codes nobody verified
(rate_limit_client_unverified), and gives it back once verified: the network's keyed hash is
kept with the code for that (no address is stored). NULL: the code took no such share (held,
admitted by a proof of work, or sent before this).

Revision ID: 0041_contact_code_asked_from
Revises: 0040_alert_provider_ref_255
Create Date: 2026-12-07 12:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0041_contact_code_asked_from"
down_revision: str | None = "0040_alert_provider_ref_255"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("contact_code", sa.Column("asked_from", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contact_code") as batch:
        batch.drop_column("asked_from")
