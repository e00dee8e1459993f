"""contact_code.held: a code the contact's limits held is never sent, and verifies nothing

Two sign-ups with a stranger's number, made while a code to that number was in its cooldown,
were each given a code that was never sent; ten wrong tries at them spent the number's tries
for the hour, and its owner's own code was then refused (429), without one SMS sent. The
limits are now taken when the code is made, in the request's transaction: a code they hold is
marked held, cannot verify, and a try at it counts on that code alone. Existing codes were all
sent or held before this column; they count as sent.

Revision ID: 0029_contact_code_held
Revises: 0028_citizen_verified_at
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029_contact_code_held"
down_revision: str | None = "0028_citizen_verified_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contact_code") as batch:
        batch.add_column(
            sa.Column("held", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("contact_code") as batch:
        batch.drop_column("held")
