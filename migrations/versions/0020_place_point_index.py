"""citizen_place: a native point GiST index that answers polygon look-ups on its own

A new advisory finds its places piece by piece (service/geomatch/postgis.py). PostGIS's
geometry GiST index holds lossy float boxes, so every candidate it returned cost a visit to
the table row, scattered over the table: at 1M citizens 18,559 page reads of 43,170 buffers
for a 5,000-vertex polygon. PostgreSQL's own point GiST index is exact and can return the
columns it includes, so the look-up becomes an index-only scan (3,321 buffers, half the time).
It replaces ix_citizen_place_geom, whose other users (a province's sea and land) now use it.
Index-only scans need the visibility map that (auto)vacuum keeps.

Revision ID: 0020_place_point_index
Revises: 0019_alert_hot_claims
Create Date: 2026-12-04 06:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020_place_point_index"
down_revision: str | None = "0019_alert_hot_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What the matcher reads of a place (postgis._PLACE, the point, the province rule's country).
INCLUDE = "lon, lat, id, citizen_id, kind, starts_on, ends_on, country"
POINT = "ST_SetSRID(ST_MakePoint(lon, lat), 4326)"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE INDEX ix_citizen_place_point ON citizen_place"
        f" USING gist ((point(lon, lat))) INCLUDE ({INCLUDE})"
    )
    op.execute("DROP INDEX IF EXISTS ix_citizen_place_geom")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"CREATE INDEX ix_citizen_place_geom ON citizen_place USING gist (({POINT}))")
    op.execute("DROP INDEX IF EXISTS ix_citizen_place_point")
