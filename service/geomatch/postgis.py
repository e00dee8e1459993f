"""The same matching inside PostGIS, for PostgreSQL: one INSERT … SELECT per advisory matches
and enqueues without moving places out of the database. Points are the expression
ST_SetSRID(ST_MakePoint(lon, lat), 4326), served by GiST expression indexes (migration 0007);
polygons by ST_Covers (boundary included), circles by ST_DWithin on geography (WGS 84
spheroid), countries by code. The tests hold it to the engine's answers."""

import json
from datetime import date, datetime, timedelta

from shapely.geometry import mapping
from sqlalchemy import Connection, text

from service.geo import matching
from service.geo.areas import Area

POINT = "ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)"
GEOGRAPHY = f"({POINT})::geography"

# The planner's parallel plan probes every point against the polygons (PERFORMANCE.md: 12 s
# instead of 0.4 s); pin the plan for these statements.
# The hits are few; the planner, guessing many, would hash-join whole tables: index lookups.
_PLAN = (
    "SET LOCAL max_parallel_workers_per_gather = 0",
    "SET LOCAL jit = off",
    "SET LOCAL enable_hashjoin = off",
    "SET LOCAL enable_mergejoin = off",
)


# A long ring makes every ST_Covers slow; cut into pieces of at most this many vertices the
# index narrows far better (PERFORMANCE.md: ST_Subdivide pays above ~1k vertices).
_PIECE_VERTICES = 255


def reach_sql(area: Area) -> tuple[str, dict[str, object]]:
    """A query of the ids of the places (citizen_place p) the area covers, and its params."""
    selects, params = [], {}
    parts = matching.polygon_parts(area)
    if parts:
        pieces = " UNION ALL ".join(
            f"SELECT ST_Subdivide(ST_GeomFromGeoJSON(:g{i}), {_PIECE_VERTICES}) AS g"
            for i in range(len(parts))
        )
        selects.append(
            f"SELECT p.id FROM ({pieces}) s"  # noqa: S608 - our fragments; values are bound
            f" JOIN citizen_place p ON ST_Covers(s.g, {POINT})"
        )
        params |= {f"g{i}": json.dumps(mapping(part)) for i, part in enumerate(parts)}
    for i, circle in enumerate(area.circles):
        centre = f"ST_SetSRID(ST_MakePoint(:clon{i}, :clat{i}), 4326)::geography"
        selects.append(
            f"SELECT p.id FROM citizen_place p"  # noqa: S608 - our fragments; values are bound
            f" WHERE ST_DWithin({GEOGRAPHY}, {centre}, :cr{i})"
        )
        params |= {
            f"clon{i}": circle.lon,
            f"clat{i}": circle.lat,
            f"cr{i}": circle.radius_km * 1000,
        }
    if area.countries:
        selects.append("SELECT p.id FROM citizen_place p WHERE p.country = ANY(:countries)")
        params["countries"] = list(area.countries)
    return " UNION ".join(selects) or "SELECT NULL::bigint AS id WHERE FALSE", params


_WINDOW = """
    c.status = 'active' AND (
      (p.kind = 'current' AND :active_now)
      OR (p.kind = 'stay' AND p.ends_on >= GREATEST(:start, :today) AND p.starts_on <= :end)
    )
"""


def matched_ids(connection: Connection, *, target: matching.Target, today: int) -> list[int]:
    """Citizen ids the target reaches, computed by PostGIS."""
    hits, params = reach_sql(target.area)
    for statement in _PLAN:
        connection.execute(text(statement))
    # Only our own SQL fragments are formatted in; every value is a bound parameter.
    rows = connection.execute(
        text(
            "SELECT DISTINCT p.citizen_id FROM citizen_place p"  # noqa: S608
            f" JOIN ({hits}) h ON h.id = p.id JOIN citizen c ON c.id = p.citizen_id"
            f" WHERE {_WINDOW} ORDER BY 1"
        ),
        {**params, **_window_params(target, today)},
    )
    return [row[0] for row in rows]


def enqueue(
    connection: Connection, *, target: matching.Target, revision: int, today: int, now: datetime
) -> int:
    """Match and enqueue in one statement; returns the new alert rows."""
    hits, params = reach_sql(target.area)
    for statement in _PLAN:
        connection.execute(text(statement))
    result = connection.execute(
        text(
            "INSERT INTO alert (advisory_id, revision, citizen_id, channel, status, created_at)"  # noqa: S608
            " SELECT DISTINCT :advisory_id, :revision, c.id, ch.channel, 'pending', :now"
            f" FROM citizen_place p JOIN ({hits}) h ON h.id = p.id"
            " JOIN citizen c ON c.id = p.citizen_id"
            " CROSS JOIN LATERAL (VALUES ('sms', c.notify_sms), ('email', c.notify_email))"
            "   AS ch(channel, wanted)"
            f" WHERE ch.wanted AND {_WINDOW}"
            " ON CONFLICT ON CONSTRAINT uq_alert_advisory_id_revision_citizen_id_channel"
            " DO NOTHING"
        ),
        {
            **params,
            **_window_params(target, today),
            "advisory_id": target.key,
            "revision": revision,
            "now": now,
        },
    )
    return result.rowcount or 0


_EPOCH = date(1970, 1, 1)


def _window_params(target: matching.Target, today: int) -> dict[str, object]:
    return {
        "active_now": target.active_now,
        "start": _EPOCH + timedelta(days=target.start_day),
        "end": _EPOCH + timedelta(days=min(target.end_day, 2_000_000)),  # FOREVER: year 7445
        "today": _EPOCH + timedelta(days=today),
    }
