"""Reading citizens' places into the engine's columnar form, through the raw driver (a million
ORM objects, or even SQLAlchemy rows, would cost more than the whole match)."""

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection

from service.citizens.models import alerted_sql
from service.geo.matching import PlaceSet, Today


@dataclass(frozen=True)
class Reachable:
    """The places of active citizens that can still match, and each citizen's channels."""

    places: PlaceSet
    citizen_ids: np.ndarray  # sorted unique
    sms: np.ndarray  # bool, aligned with citizen_ids
    email: np.ndarray
    # Opted in to drills (citizen.exercises), aligned with citizen_ids; None when not read.
    exercises: np.ndarray | None = None

    def channels_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Of these citizen ids, those reachable by SMS and those by e-mail."""
        pos = np.searchsorted(self.citizen_ids, ids)
        return ids[self.sms[pos]], ids[self.email[pos]]

    def opted_in(self, ids: np.ndarray) -> np.ndarray:
        """Of these citizen ids (all in citizen_ids), those who take exercises."""
        if self.exercises is None:
            raise ValueError("the exercises flags were not read")
        return ids[self.exercises[np.searchsorted(self.citizen_ids, ids)]]


# Day numbers (days since 1970-01-01) computed by the database: -1 (CURRENT) for a current place.
_DAYS = {
    "sqlite": "CAST(julianday({col}) - 2440587.5 AS INTEGER)",
    "postgresql": "({col} - DATE '1970-01-01')",
}
_MARK = {"sqlite": "?", "postgresql": "%s"}
_QUERY = """
SELECT p.citizen_id, p.lon, p.lat, p.country,
       CASE WHEN p.kind = 'current' THEN -1 ELSE {starts} END,
       CASE WHEN p.kind = 'current' THEN -1 ELSE {ends} END
       {flags}
FROM citizen_place p {join}
WHERE (p.kind = 'current' OR p.ends_on >= {mark}) {extra}
"""
_JOIN = f"JOIN citizen c ON c.id = p.citizen_id AND {alerted_sql('c')}"
# Only our own SQL fragments are formatted in; every value is a bound parameter.
_ALERTING = {
    "sqlite": "SELECT id, notify_sms, notify_email{flags} FROM citizen c "  # noqa: S608
    "INDEXED BY ix_citizen_alerting "
    f"WHERE {alerted_sql('c')} AND id IN (SELECT value FROM json_each(?)) ORDER BY id",
    "postgresql": "SELECT id, notify_sms, notify_email{flags} FROM citizen c "  # noqa: S608
    f"WHERE {alerted_sql('c')} AND id = ANY(%s) ORDER BY id",
}

Box = tuple[float, float, float, float]  # west, south, east, north


def load_reachable(
    connection: Connection,
    *,
    today: Today,
    citizen_id: int | None = None,
    citizen_ids: Sequence[int] | None = None,
    id_range: tuple[int, int] | None = None,
) -> Reachable:
    """Places that can match from today on, of active citizens: all of them, one citizen's,
    some citizens', or those of the citizens whose ids lie in a range (a shard, inclusive)."""
    extra, params = "", []
    mark = _MARK[connection.dialect.name]
    if citizen_id is not None:
        extra, params = f"AND p.citizen_id = {mark}", [citizen_id]
    elif id_range is not None:
        extra, params = f"AND p.citizen_id BETWEEN {mark} AND {mark}", list(id_range)
    elif citizen_ids is not None:
        extra = f"AND p.citizen_id IN ({', '.join([mark] * len(citizen_ids)) or 'NULL'})"
        params = list(citizen_ids)
    return reachable_from_rows(_fetch(connection, today, extra, params, alerting=True))


def load_places(
    connection: Connection,
    *,
    today: Today,
    boxes: Sequence[Box],
    countries: Sequence[str] = (),
    country_only: Sequence[str] = (),
) -> PlaceSet:
    """Places inside some boxes or countries that can match from today on, whoever holds them:
    what a new advisory can reach, by an index range scan. Whose citizens are active, and on
    which channels, is read afterwards for the few matched (with_alerting)."""
    mark = _MARK[connection.dialect.name]
    clause = f"(p.lon BETWEEN {mark} AND {mark} AND p.lat BETWEEN {mark} AND {mark})"
    clauses, params = [clause] * len(boxes), []
    for west, south, east, north in boxes:
        params += [west, east, south, north]
    if countries:
        clauses.append(f"p.country IN ({', '.join([mark] * len(countries))})")
        params += list(countries)
    if country_only:  # citizens known only by country, of countries an area covers part of
        marks = ", ".join([mark] * len(country_only))
        clauses.append(f"(p.lon IS NULL AND p.country IN ({marks}))")
        params += list(country_only)
    extra = f"AND ({' OR '.join(clauses) or 'FALSE'})"
    rows = _fetch(connection, today, extra, params, alerting=False)
    if not rows:
        return PlaceSet.build([], [], [], [], [], [])
    return PlaceSet.build(*(list(column) for column in zip(*rows, strict=True)))


def with_alerting(
    connection: Connection, places: PlaceSet, ids: np.ndarray, *, exercises: bool = False
) -> Reachable:
    """The places, with the channels of those of `ids` (matched citizens) who are active, and
    with `exercises` whether each takes drills (read only then: the flag is not in the covering
    index, so reading it costs a table look-up per citizen)."""
    dialect = connection.dialect.name
    wanted = json.dumps(ids.tolist()) if dialect == "sqlite" else ids.tolist()
    query = _ALERTING[dialect].format(flags=", exercises" if exercises else "")
    rows = _cursor_rows(connection, query, [wanted])
    active = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    return Reachable(
        places=places,
        citizen_ids=active,
        sms=np.fromiter((row[1] for row in rows), dtype=bool, count=len(rows)),
        email=np.fromiter((row[2] for row in rows), dtype=bool, count=len(rows)),
        exercises=(
            np.fromiter((row[3] for row in rows), dtype=bool, count=len(rows))
            if exercises
            else None
        ),
    )


def _fetch(
    connection: Connection, today: Today, extra: str, params: list, *, alerting: bool
) -> list[tuple]:
    dialect = connection.dialect.name
    days = _DAYS[dialect]
    query = _QUERY.format(
        starts=days.format(col="p.starts_on"),
        ends=days.format(col="p.ends_on"),
        flags=", c.notify_sms, c.notify_email, c.exercises" if alerting else "",
        join=_JOIN if alerting else "",
        mark=_MARK[dialect],
        extra=extra,
    )
    first = today.first_date_on.isoformat() if dialect == "sqlite" else today.first_date_on
    return _cursor_rows(connection, query, [first, *params])


def _cursor_rows(connection: Connection, query: str, params: list) -> list[tuple]:
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.execute(query, params)
        return cursor.fetchall()
    finally:
        cursor.close()


def reachable_from_rows(rows: list) -> Reachable:
    if not rows:
        empty = np.empty(0, dtype=np.int64)
        none = PlaceSet.build([], [], [], [], [], [])
        no = empty.astype(bool)
        return Reachable(none, empty, no, no, no)
    ids, lons, lats, codes, starts, ends, sms, email, drills = zip(*rows, strict=True)
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
        exercises=np.fromiter(drills, dtype=bool, count=len(rows))[first],
    )
