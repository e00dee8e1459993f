"""alert: a claim touches no index, and the bulk write feeds smaller ones

- alert.is_open, stored by the database from status (open: pending, retry_wait, claimed). The
  claim's partial index covers `is_open` rows instead of naming status, so no index names
  status any more: a claim (pending -> claimed, open both before and after) changes no indexed
  column and, on PostgreSQL, can be a HOT update (no index entries).
- ix_alert_citizen_id_status becomes ix_alert_citizen_id: a citizen has few rows, the status a
  look-up wants is filtered after it.
- PostgreSQL: fillfactor 70, so the claim's new row version fits on its page. Adding the stored
  column rewrites the table (under an exclusive lock), which applies the fillfactor to the rows
  already there.

Revision ID: 0019_alert_hot_claims
Revises: 0018_dispatcher_health
Create Date: 2026-12-03 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_alert_hot_claims"
down_revision: str | None = "0018_dispatcher_health"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "status IN ('pending', 'retry_wait', 'claimed')"
FILLFACTOR = 70


def _is_open() -> sa.Column:
    return sa.Column("is_open", sa.Boolean(), sa.Computed(OPEN, persisted=True), nullable=False)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Before the column, whose rewrite of the table then leaves the room.
        op.execute(f"ALTER TABLE alert SET (fillfactor = {FILLFACTOR})")
        op.add_column("alert", _is_open())
        op.drop_index("ix_alert_open_priority", table_name="alert")
        op.drop_index("ix_alert_citizen_id_status", table_name="alert")
        op.create_index(
            "ix_alert_open_priority",
            "alert",
            ["channel", "priority", "id"],
            postgresql_where=sa.text("is_open"),
        )
        op.create_index("ix_alert_citizen_id", "alert", ["citizen_id"])
        return
    # SQLite cannot add a stored column in place: the table is copied.
    with op.batch_alter_table("alert", recreate="always") as batch_op:
        batch_op.add_column(_is_open())
        batch_op.drop_index("ix_alert_open_priority", sqlite_where=sa.text(OPEN))
        batch_op.drop_index("ix_alert_citizen_id_status")
        batch_op.create_index(
            "ix_alert_open_priority", ["channel", "priority", "id"], sqlite_where=sa.text("is_open")
        )
        batch_op.create_index("ix_alert_citizen_id", ["citizen_id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_alert_citizen_id", table_name="alert")
        op.drop_index("ix_alert_open_priority", table_name="alert")
        op.drop_column("alert", "is_open")
        op.create_index(
            "ix_alert_open_priority",
            "alert",
            ["channel", "priority", "id"],
            postgresql_where=sa.text(OPEN),
        )
        op.create_index("ix_alert_citizen_id_status", "alert", ["citizen_id", "status"])
        op.execute("ALTER TABLE alert RESET (fillfactor)")
        return
    with op.batch_alter_table("alert", recreate="always") as batch_op:
        batch_op.drop_index("ix_alert_citizen_id")
        batch_op.drop_index("ix_alert_open_priority", sqlite_where=sa.text("is_open"))
        batch_op.drop_column("is_open")
        batch_op.create_index(
            "ix_alert_open_priority", ["channel", "priority", "id"], sqlite_where=sa.text(OPEN)
        )
        batch_op.create_index("ix_alert_citizen_id_status", ["citizen_id", "status"])
