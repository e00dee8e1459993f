"""The same matching inside PostGIS, for PostgreSQL: one INSERT … SELECT per advisory matches
and enqueues without moving places out of the database. Points are the expression
ST_SetSRID(ST_MakePoint(lon, lat), 4326), served by GiST expression indexes (migration 0007);
polygons by ST_Covers (boundary included; long rings cut in pieces first), circles by
ST_DWithin on geography (WGS 84 spheroid), countries by code (the stored code already holds the
12-nautical-mile rule), provinces by ST_Covers and, for a place on no province, by ST_DWithin
on geography to the nearest province's coast within 12 nautical miles. The tests hold it to
the engine's answers."""

from datetime import date, datetime, timedelta
from functools import cache

import numpy as np
import shapely
from psycopg.errors import UniqueViolation
from shapely.geometry import MultiPolygon, Polygon
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from service.geo import matching, subdivisions, waters
from service.geo.areas import Area
from service.ledger import states
from service.ledger.enqueue import COLUMNS, ON_CONFLICT

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
    for i, code in enumerate(area.subdivisions):
        selects.append(_waters_sql(i))
        coast, land, rivals, ranks = _waters_of(code)
        params |= {
            f"coast{i}": coast,
            f"land{i}": land,
            f"rival{i}": rivals,
            f"rank{i}": ranks,
            f"own{i}": subdivisions.index().rank[code],
            f"country{i}": subdivisions.all_subdivisions()[code].country,
        }
    if area.countries:
        selects.append(
            f"SELECT {_PLACE} FROM citizen_place p WHERE p.country = ANY(:countries)"  # noqa: S608
        )
        params["countries"] = list(area.countries)
    if area.subdivisions:
        params["sea"] = waters.TERRITORIAL_SEA_KM * 1000
    empty = f"SELECT {_PLACE} FROM citizen_place p WHERE FALSE"  # noqa: S608
    return " UNION ".join(selects) or empty, params


def _wkb(geometry: str) -> str:
    return f"ST_GeomFromWKB({geometry}, 4326)"


def _waters_sql(i: int) -> str:
    """Places province i owns by the territorial-sea rule: of its country (by their stored code),
    within 12 nm of its coast (the GiST index on the geography points finds them), on no
    province (ST_Covers on the pieces of it and its neighbours), and no province of the same
    country nearer (a tie goes to the lower rank, as in the engine)."""
    coast, land, rival = _wkb("c.w") + "::geography", _wkb("l.w"), _wkb("r.w") + "::geography"
    return (
        f"SELECT {_PLACE} FROM ("  # noqa: S608 - our fragments; values are bound
        f"SELECT p.id, min(ST_Distance({coast}, {GEOGRAPHY})) AS d"
        f" FROM unnest(CAST(:coast{i} AS bytea[])) AS c(w)"
        f" JOIN citizen_place p ON ST_DWithin({coast}, {GEOGRAPHY}, :sea)"
        f" WHERE p.country = :country{i} GROUP BY p.id"
        ") near JOIN citizen_place p ON p.id = near.id"
        f" WHERE NOT EXISTS (SELECT 1 FROM unnest(CAST(:land{i} AS bytea[])) AS l(w)"
        f" WHERE ST_Covers({land}, {POINT}))"
        f" AND NOT EXISTS (SELECT 1 FROM unnest(CAST(:rival{i} AS bytea[]),"
        f" CAST(:rank{i} AS int[])) AS r(w, rank)"
        f" WHERE ST_DWithin({rival}, {GEOGRAPHY}, near.d)"
        f" AND (r.rank < :own{i} OR ST_Distance({rival}, {GEOGRAPHY}) < near.d))"
    )


_LINE_VERTICES = 64


def _lines(geometry: shapely.Geometry) -> list[shapely.LineString]:
    """The rings of a (multi)polygon as lines of at most _LINE_VERTICES vertices."""
    lines = []
    for ring in shapely.get_rings(shapely.get_parts(geometry)).tolist():
        coords = shapely.get_coordinates(ring)
        step = _LINE_VERTICES - 1
        lines.extend(
            shapely.LineString(coords[lo : lo + _LINE_VERTICES])
            for lo in range(0, len(coords) - 1, step)
        )
    return lines


@cache
def _waters_of(code: str) -> tuple[list[bytes], list[bytes], list[bytes], list[int]]:
    """WKB of a province's coast lines; of the polygon pieces of it and of its neighbours that
    reach its 12-nm sea; of the lines of its country's neighbours that can be nearer, with their
    ranks."""
    index, provinces = subdivisions.index(), subdivisions.all_subdivisions()
    reach = subdivisions.reach_boxes(code)
    farther = [box for near in reach for box in waters.reach_boxes(*near)]
    tree = index.territories.tree
    neighbours = np.unique(tree.query(shapely.box(*np.array(farther).T))[1])
    own = index.rank[code]
    land, rivals, ranks = [], [], []
    for rank in [own, *(int(n) for n in neighbours if n != own)]:
        geometry = index.territories.geometries[rank]
        cut = [piece for part in shapely.get_parts(geometry).tolist() for piece in pieces(part)]
        land += [piece for piece in cut if _touches_any(reach, piece)]
        if rank != own and provinces[index.codes[rank]].country == provinces[code].country:
            near = [line for line in _lines(geometry) if _touches_any(farther, line)]
            rivals += near
            ranks += [rank] * len(near)
    coast = _lines(index.territories.geometries[own])
    return _to_wkb(coast), _to_wkb(land), _to_wkb(rivals), ranks


def _touches_any(boxes: list[waters.Box], geometry: shapely.Geometry) -> bool:
    west, south, east, north = geometry.bounds
    return any(w <= east and west <= e and s <= north and south <= n for w, s, e, n in boxes)


def _to_wkb(geometries: list) -> list[bytes]:
    return shapely.to_wkb(np.array(geometries, dtype=object)).tolist() if geometries else []


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
        f"INSERT INTO alert ({COLUMNS})"  # noqa: S608
        f" SELECT DISTINCT :advisory_id, :revision, c.id, ch.channel, '{states.PENDING}', :now"
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
