"""Reading citizens' places into the engine's columnar form, through the raw driver (a million
ORM objects, or even SQLAlchemy rows, would cost more than the whole match)."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
from sqlalchemy import Connection

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


# Day numbers (days since 1970-01-01) computed by the database: -1 (CURRENT) for a current place.
_DAYS = {
    "sqlite": "CAST(julianday({col}) - 2440587.5 AS INTEGER)",
    "postgresql": "({col} - DATE '1970-01-01')",
}
_MARK = {"sqlite": "?", "postgresql": "%s"}
_QUERY = """
SELECT p.citizen_id, p.lon, p.lat, p.country,
       CASE WHEN p.kind = 'current' THEN -1 ELSE {starts} END,
       CASE WHEN p.kind = 'current' THEN -1 ELSE {ends} END,
       c.notify_sms, c.notify_email
FROM citizen_place p JOIN citizen c ON c.id = p.citizen_id
WHERE c.status = 'active' AND (p.kind = 'current' OR p.ends_on >= {mark}) {extra}
"""

Box = tuple[float, float, float, float]  # west, south, east, north


def load_reachable(
    connection: Connection,
    *,
    today: date,
    citizen_id: int | None = None,
    citizen_ids: Sequence[int] | None = None,
    boxes: Sequence[Box] | None = None,
    countries: Sequence[str] = (),
) -> Reachable:
    """Places that can match from today on: all of them, one citizen's, or only those inside
    some boxes or countries (what a new advisory can reach: an index range scan, not a read of
    every place)."""
    dialect = connection.dialect.name
    mark = _MARK[dialect]
    params: list[object] = [today.isoformat() if dialect == "sqlite" else today]
    extra = ""
    if citizen_id is not None:
        extra = f"AND p.citizen_id = {mark}"
        params.append(citizen_id)
    elif citizen_ids is not None:
        extra = f"AND p.citizen_id IN ({', '.join([mark] * len(citizen_ids)) or 'NULL'})"
        params += list(citizen_ids)
    elif boxes is not None:
        clauses = [f"(p.lon BETWEEN {mark} AND {mark} AND p.lat BETWEEN {mark} AND {mark})"] * len(
            boxes
        )
        for west, south, east, north in boxes:
            params += [west, east, south, north]
        if countries:
            clauses.append(f"p.country IN ({', '.join([mark] * len(countries))})")
            params += list(countries)
        extra = f"AND ({' OR '.join(clauses) or 'FALSE'})"
    days = _DAYS[dialect]
    query = _QUERY.format(
        starts=days.format(col="p.starts_on"),
        ends=days.format(col="p.ends_on"),
        mark=mark,
        extra=extra,
    )
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.execute(query, params)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return reachable_from_rows(rows)


def merge(old: Reachable, changed_ids: np.ndarray, fresh: Reachable) -> Reachable:
    """`old` with the places of changed citizens replaced by their `fresh` ones."""
    keep = ~np.isin(old.places.citizen_ids, changed_ids)
    p, q = old.places, fresh.places
    places = PlaceSet.build(
        np.concatenate([p.citizen_ids[keep], q.citizen_ids]),  # sorts again: ~0.2 s at 1M
        np.concatenate([p.lons[keep], q.lons]),
        np.concatenate([p.lats[keep], q.lats]),
        np.concatenate([p.countries[keep], q.countries]),
        np.concatenate([p.starts[keep], q.starts]),
        np.concatenate([p.ends[keep], q.ends]),
    )
    kept = ~np.isin(old.citizen_ids, changed_ids)
    ids = np.concatenate([old.citizen_ids[kept], fresh.citizen_ids])
    order = np.argsort(ids)
    return Reachable(
        places=places,
        citizen_ids=ids[order],
        sms=np.concatenate([old.sms[kept], fresh.sms])[order],
        email=np.concatenate([old.email[kept], fresh.email])[order],
    )


def reachable_from_rows(rows: list) -> Reachable:
    if not rows:
        empty = np.empty(0, dtype=np.int64)
        none = PlaceSet.build([], [], [], [], [], [])
        return Reachable(none, empty, empty.astype(bool), empty.astype(bool))
    ids, lons, lats, codes, starts, ends, sms, email = zip(*rows, strict=True)
    id_array = np.fromiter(ids, dtype=np.int64, count=len(rows))
    places = PlaceSet.build(
        id_array,
        np.array(lons, dtype=np.float64),  # None becomes NaN
        np.array(lats, dtype=np.float64),
        np.array(codes, dtype=object),
        np.fromiter(starts, dtype=np.int32, count=len(rows)),
        np.fromiter(ends, dtype=np.int32, count=len(rows)),
    )
    unique_ids, first = np.unique(id_array, return_index=True)
    return Reachable(
        places=places,
        citizen_ids=unique_ids,
        sms=np.fromiter(sms, dtype=bool, count=len(rows))[first],
        email=np.fromiter(email, dtype=bool, count=len(rows))[first],
    )
