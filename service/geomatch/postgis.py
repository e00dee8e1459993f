"""The same matching inside PostGIS, for PostgreSQL: one INSERT … SELECT per advisory matches
and enqueues without moving places out of the database. Points are the expression
ST_SetSRID(ST_MakePoint(lon, lat), 4326), served by GiST expression indexes (migration 0007);
polygons by ST_Covers (boundary included; long rings cut in pieces first), circles by
ST_DWithin on geography (WGS 84 spheroid), countries by code. The tests hold it to the
engine's answers."""

from datetime import date, datetime, timedelta

import numpy as np
import shapely
from psycopg.errors import UniqueViolation
from shapely.geometry import MultiPolygon, Polygon
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from service.geo import matching
from service.geo.areas import Area
from service.geomatch.ledger import ON_CONFLICT

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


# ST_Covers against a long ring is slow however well the index narrows (a 5,000-vertex polygon:
# 60 µs a point), and PostGIS's own ST_Subdivide took 0.55 s on such a ring. Long parts are cut
# here instead: split in halves along the longer side (GEOS clip_by_rect, 10× faster than an
# overlay) until no piece has more than this many vertices; inner pieces become plain boxes.
_PIECE_VERTICES = 64


def pieces(part: Polygon) -> list[Polygon | MultiPolygon]:
    """The part as pieces whose union is the part, none of more than _PIECE_VERTICES vertices
    (unless a cut would not be valid: then the part whole, slower but never wrong)."""
    if shapely.get_num_coordinates(part) <= 2 * _PIECE_VERTICES:
        return [part]
    done, todo = [], [part]
    while todo:
        piece = todo.pop()
        if piece.is_empty:
            continue
        if shapely.get_num_coordinates(piece) <= _PIECE_VERTICES:
            done.append(piece)
            continue
        west, south, east, north = piece.bounds
        if east - west >= north - south:
            middle = (west + east) / 2
            halves = [(west, south, middle, north), (middle, south, east, north)]
        else:
            middle = (south + north) / 2
            halves = [(west, south, east, middle), (west, middle, east, north)]
        todo.extend(shapely.clip_by_rect(piece, *half) for half in halves)
    # clip_by_rect does not promise valid output; a point test on an invalid piece could err.
    polygonal = all(p.geom_type in ("Polygon", "MultiPolygon") for p in done)
    if not polygonal or not shapely.is_valid(np.array(done, dtype=object)).all():
        return [part]
    return done


# What a hit carries: enough of the place for the time window, so it is not looked up again.
_PLACE = "p.id, p.citizen_id, p.kind, p.starts_on, p.ends_on"


def reach_sql(area: Area) -> tuple[str, dict[str, object]]:
    """A query of the places (citizen_place rows, as _PLACE) the area covers, and its params."""
    selects, params = [], {}
    cut = [piece for part in matching.polygon_parts(area) for piece in pieces(part)]
    if cut:
        selects.append(
            f"SELECT {_PLACE} FROM unnest(CAST(:pieces AS bytea[])) AS s(wkb)"  # noqa: S608
            f" JOIN citizen_place p ON ST_Covers(ST_GeomFromWKB(s.wkb, 4326), {POINT})"
        )
        params["pieces"] = shapely.to_wkb(np.array(cut, dtype=object)).tolist()
    for i, circle in enumerate(area.circles):
        centre = f"ST_SetSRID(ST_MakePoint(:clon{i}, :clat{i}), 4326)::geography"
        selects.append(
            f"SELECT {_PLACE} FROM citizen_place p"  # noqa: S608 - our fragments; values are bound
            f" WHERE ST_DWithin({GEOGRAPHY}, {centre}, :cr{i})"
        )
        params |= {
            f"clon{i}": circle.lon,
            f"clat{i}": circle.lat,
            f"cr{i}": circle.radius_km * 1000,
        }
    if area.countries:
        selects.append(
            f"SELECT {_PLACE} FROM citizen_place p WHERE p.country = ANY(:countries)"  # noqa: S608
        )
        params["countries"] = list(area.countries)
    empty = f"SELECT {_PLACE} FROM citizen_place p WHERE FALSE"  # noqa: S608
    return " UNION ".join(selects) or empty, params


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
            f"SELECT DISTINCT p.citizen_id FROM ({hits}) p"  # noqa: S608
            " JOIN citizen c ON c.id = p.citizen_id"
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
    insert = (
        "INSERT INTO alert (advisory_id, revision, citizen_id, channel, status, created_at)"  # noqa: S608
        " SELECT DISTINCT :advisory_id, :revision, c.id, ch.channel, 'pending', :now"
        f" FROM ({hits}) p JOIN citizen c ON c.id = p.citizen_id"
        " CROSS JOIN LATERAL (VALUES ('sms', c.notify_sms), ('email', c.notify_email))"
        "   AS ch(channel, wanted)"
        f" WHERE ch.wanted AND {_WINDOW}"
    )
    values = {
        **params,
        **_window_params(target, today),
        "advisory_id": target.key,
        "revision": revision,
        "now": now,
    }
    # A revision is usually new to the ledger: a plain INSERT skips the speculative insertion
    # ON CONFLICT pays per row (a third of the insert). If another path got there first, the
    # key refuses it and the statement runs again keeping only what is new.
    try:
        with connection.begin_nested():
            return connection.execute(text(insert), values).rowcount or 0
    except IntegrityError as error:
        if not isinstance(error.orig, UniqueViolation):
            raise
    return connection.execute(text(insert + ON_CONFLICT), values).rowcount or 0


_EPOCH = date(1970, 1, 1)


def _window_params(target: matching.Target, today: int) -> dict[str, object]:
    return {
        "active_now": target.active_now,
        "start": _EPOCH + timedelta(days=target.start_day),
        "end": _EPOCH + timedelta(days=min(target.end_day, 2_000_000)),  # FOREVER: year 7445
        "today": _EPOCH + timedelta(days=today),
    }
