"""Reading citizens' places into the engine's columnar form, through the raw driver (a million
ORM objects would cost more than the whole match)."""

from dataclasses import dataclass
from datetime import date

import numpy as np
from sqlalchemy import Connection, text

from service.geo.matching import PlaceSet


@dataclass(frozen=True)
class Reachable:
    """The places of active citizens that can still match, and each citizen's channels."""

    places: PlaceSet
    citizen_ids: np.ndarray  # sorted unique
    sms: np.ndarray  # bool, aligned with citizen_ids
    email: np.ndarray

    def channels_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Of these citizen ids, those reachable by SMS and those by e-mail."""
        pos = np.searchsorted(self.citizen_ids, ids)
        return ids[self.sms[pos]], ids[self.email[pos]]


# Day numbers (days since 1970-01-01) computed by the database: CURRENT (-1) for a current place.
_DAYS = {
    "sqlite": "CAST(julianday({col}) - 2440587.5 AS INTEGER)",
    "postgresql": "({col} - DATE '1970-01-01')",
}
_QUERY = """
SELECT p.citizen_id, p.lon, p.lat, p.country,
       CASE WHEN p.kind = 'current' THEN -1 ELSE {starts} END,
       CASE WHEN p.kind = 'current' THEN -1 ELSE {ends} END,
       c.notify_sms, c.notify_email
FROM citizen_place p JOIN citizen c ON c.id = p.citizen_id
WHERE c.status = 'active' AND (p.kind = 'current' OR p.ends_on >= :today) {extra}
"""


def load_reachable(
    connection: Connection, *, today: date, citizen_id: int | None = None
) -> Reachable:
    days = _DAYS[connection.dialect.name]
    query = _QUERY.format(
        starts=days.format(col="p.starts_on"),
        ends=days.format(col="p.ends_on"),
        extra="AND p.citizen_id = :citizen_id" if citizen_id is not None else "",
    )
    rows = connection.execute(text(query), {"today": today, "citizen_id": citizen_id}).all()
    return reachable_from_rows(rows)


def reachable_from_rows(rows: list) -> Reachable:
    if not rows:
        empty = np.empty(0, dtype=np.int64)
        return Reachable(
            PlaceSet.build([], [], [], [], [], []), empty, empty.astype(bool), empty.astype(bool)
        )
    ids, lons, lats, codes, starts, ends, sms, email = zip(*rows, strict=True)
    places = PlaceSet.build(
        ids,
        np.array(lons, dtype=np.float64),  # None becomes NaN
        np.array(lats, dtype=np.float64),
        np.array(codes, dtype=object),
        np.array(starts, dtype=np.int32),
        np.array(ends, dtype=np.int32),
    )
    id_array = np.asarray(ids, dtype=np.int64)
    unique_ids, first = np.unique(id_array, return_index=True)
    return Reachable(
        places=places,
        citizen_ids=unique_ids,
        sms=np.asarray(sms, dtype=bool)[first],
        email=np.asarray(email, dtype=bool)[first],
    )
