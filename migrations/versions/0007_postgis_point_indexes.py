"""PostGIS point indexes on citizen places (PostgreSQL only)

The PostGIS matcher (service/geomatch/postgis.py) works on the expression
ST_SetSRID(ST_MakePoint(lon, lat), 4326), as geometry for polygons and as geography for
circles: these GiST indexes serve both. SQLite has no PostGIS and needs nothing here.

Revision ID: 0007_postgis_point_indexes
Revises: 0006_citizen_updated_at_index
Create Date: 2026-11-27 22:15:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0007_postgis_point_indexes'
down_revision: str | None = '0006_citizen_updated_at_index'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POINT = "ST_SetSRID(ST_MakePoint(lon, lat), 4326)"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.execute(f"CREATE INDEX ix_citizen_place_geom ON citizen_place USING gist (({POINT}))")
    op.execute(
        f"CREATE INDEX ix_citizen_place_geog ON citizen_place USING gist ((({POINT})::geography))"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_citizen_place_geog")
    op.execute("DROP INDEX IF EXISTS ix_citizen_place_geom")
