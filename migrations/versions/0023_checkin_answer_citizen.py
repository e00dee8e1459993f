"""checkin_answer(citizen_id, id): a citizen's own words, newest first, found by index

The reveal lists a citizen's words (their SMS replies and page notes) newest first. Without
an index starting with citizen_id that was a scan of every answer: 190-290 ms at 2 million
answers (EXPLAIN ANALYZE on PostgreSQL, in a review), during the crisis that made them.

Revision ID: 0023_checkin_answer_citizen
Revises: 0022_checkin_taken
Create Date: 2026-12-04 21:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023_checkin_answer_citizen"
down_revision: str | None = "0022_checkin_taken"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_checkin_answer_citizen_id", "checkin_answer", ["citizen_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_checkin_answer_citizen_id", table_name="checkin_answer")
