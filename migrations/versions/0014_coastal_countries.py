"""citizen_place.country for points stored before the territorial-sea rule

Points within 12 nautical miles of a coast but on no country's polygon were stored with no
country, so country advisories missed them (Kuta beach, Boracay, Palm Jumeirah). They get the
nearest country now, as new registrations do (service/geo/waters.py). Points farther out keep
none.

Revision ID: 0014_coastal_countries
Revises: 0013_verified_contacts
Create Date: 2026-12-03 06:00:00
"""
from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa
from alembic import op

from service.geo import countries

revision: str = '0014_coastal_countries'
down_revision: str | None = '0013_verified_contacts'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text('SELECT id, lon, lat FROM citizen_place WHERE country IS NULL AND lon IS NOT NULL')
    ).all()
    if not rows:
        return
    ids, lons, lats = zip(*rows, strict=True)
    codes = countries.boundaries().codes_at(np.array(lons), np.array(lats))
    found = [{'id': i, 'country': c} for i, c in zip(ids, codes, strict=True) if c]
    if found:
        bind.execute(sa.text('UPDATE citizen_place SET country = :country WHERE id = :id'), found)


def downgrade() -> None:
    pass  # the codes stay right: the rule only ever gave them to places that had none
