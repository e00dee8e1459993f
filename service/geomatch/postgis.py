"""The same matching inside PostGIS, for PostgreSQL: one INSERT … SELECT per advisory matches
and enqueues without moving places out of the database. Polygons and boxes find their places
through PostgreSQL's point GiST index on point(lon, lat), which includes what is read of a
place (migration 0020: an index-only scan); circles through the GiST index on the geography
expression (migration 0007). Polygons are decided by ST_Covers (boundary included; long rings
cut in pieces first), circles by ST_DWithin on geography (WGS 84 spheroid), countries by code
(the stored code already holds the 12-nautical-mile rule), provinces by ST_Covers and, for a
place on no province, by ST_DWithin on geography to the nearest province's coast within 12
nautical miles. The tests hold it to the engine's answers."""

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache

import numpy as np
import shapely
from psycopg.errors import UniqueViolation
from shapely.geometry import MultiPolygon, Polygon
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from service.citizens.models import alerted_sql
from service.geo import matching, subdivisions, waters
from service.geo.areas import Area
from service.ledger import states
from service.ledger.enqueue import COLUMNS, ON_CONFLICT
from service.ledger.priority import DEFAULT as DEFAULT_PRIORITY
from service.ledger.priority import told_ahead

POINT = "ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)"
GEOGRAPHY = f"({POINT})::geography"
# The key of ix_citizen_place_point. PostGIS's geometry index holds lossy float boxes, so each
# candidate cost a visit to its scattered table row; this one is exact and returns the place's
# columns itself (index-only, once vacuum has marked the pages visible).
POINT_KEY = "point(p.lon, p.lat)"


def _covered_by(polygon: str) -> str:
    """A join condition: the place lies in the polygon (a geometry column of a lateral
    function scan, so that its WKB is parsed once, not per candidate: 35 % less time). The
    point index finds the places in the polygon's bounding box (exact doubles, edges
    included, so no place inside is missed); ST_Covers, boundary included, decides."""
    return f"{POINT_KEY} <@ box({polygon}) AND ST_Covers({polygon}, {POINT})"


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
# 128 rather than 64: 347 pieces (index scans) instead of 1,383 for the 5,000-vertex ring; its
# whole advisory at 1M citizens took 8-11 % less in two loops on a settled database, and no
# less right after a first sweep (docs/benchmarks.md). 96 was as fast; 32, 192, 256 slower.
_PIECE_VERTICES = 128


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
_PLACE = "p.id, p.citizen_id, p.kind, p.starts_on, p.ends_on, p.lon, p.country"


def reach_sql(area: Area) -> tuple[str, dict[str, object]]:
    """A query of the places (citizen_place rows, as _PLACE) the area covers, and its params."""
    selects, params = [], {}
    cut = [piece for part in matching.polygon_parts(area) for piece in pieces(part)]
    if cut:
        selects.append(
            f"SELECT {_PLACE} FROM unnest(CAST(:pieces AS bytea[])) AS s(wkb)"  # noqa: S608
            f" CROSS JOIN LATERAL {_wkb('s.wkb')} AS piece(g)"
            f" JOIN citizen_place p ON {_covered_by('piece.g')}"
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
        sea = _waters_of(code)
        params |= {
            f"land{i}": sea.land,
            f"rank{i}": sea.rival_ranks,
            f"own{i}": subdivisions.index().rank[code],
            f"country{i}": subdivisions.all_subdivisions()[code].country,
        }
        for name, lines, boxes in (
            ("coast", sea.coast, sea.coast_boxes),
            ("rival", sea.rivals, sea.rival_boxes),
        ):
            params[f"{name}{i}"] = lines
            params |= {f"{name}_{side}{i}": v for side, v in zip(_SIDES, boxes, strict=True)}
        reach = zip(*subdivisions.reach_boxes(code), strict=True)
        params |= {f"{side}{i}": list(v) for side, v in zip(_SIDES, reach, strict=True)}
    if area.countries:
        selects.append(
            f"SELECT {_PLACE} FROM citizen_place p WHERE p.country = ANY(:countries)"  # noqa: S608
        )
        params["countries"] = list(area.countries)
    if area.country_only:  # citizens known only by country, of countries it covers part of
        selects.append(
            f"SELECT {_PLACE} FROM citizen_place p"  # noqa: S608 - our fragments; values bound
            " WHERE p.lon IS NULL AND p.country = ANY(:country_only)"
        )
        params["country_only"] = list(area.country_only)
    if area.subdivisions:
        params |= {"sea": waters.TERRITORIAL_SEA_KM * 1000, "tie": waters.TIE_KM * 1000}
    empty = f"SELECT {_PLACE} FROM citizen_place p WHERE FALSE"  # noqa: S608
    return " UNION ".join(selects) or empty, params


_SIDES = ("west", "south", "east", "north")


def _wkb(geometry: str) -> str:
    return f"ST_GeomFromWKB({geometry}, 4326)"


def _geography(row: str) -> str:
    return f"ST_SetSRID(ST_MakePoint({row}.lon, {row}.lat), 4326)::geography"


def _lines_of(name: str, i: int) -> str:
    """Arrays of lines (WKB) and, aligned, the boxes of the points within 12 nm of each."""
    sides = ", ".join(f"CAST(:{name}_{side}{i} AS float8[])" for side in _SIDES)
    return f"CAST(:{name}{i} AS bytea[]), {sides}"


def _waters_sql(i: int) -> str:
    """Places province i owns by the territorial-sea rule: of its country (by their stored
    code), in its reach boxes (GiST index), on no province (ST_Covers on the pieces of it and its
    neighbours, each piece finding its points by the index), within 12 nm of its coast and no
    province of the same country nearer (ST_DWithin and ST_Distance on geography, for the few
    left; within a centimetre it is a tie, and the lower rank wins, as in the engine)."""
    return f"""(
    WITH coast AS MATERIALIZED (
      SELECT {_wkb("c.w")}::geography AS g, c.west, c.south, c.east, c.north
      FROM unnest({_lines_of("coast", i)}) AS c(w, west, south, east, north)
    ), rival AS MATERIALIZED (
      SELECT {_wkb("r.w")}::geography AS g, r.west, r.south, r.east, r.north, r.rank
      FROM unnest({_lines_of("rival", i)}, CAST(:rank{i} AS int[]))
        AS r(w, west, south, east, north, rank)
    ), sea AS MATERIALIZED (
      SELECT p.id FROM unnest(
        CAST(:west{i} AS float8[]), CAST(:south{i} AS float8[]),
        CAST(:east{i} AS float8[]), CAST(:north{i} AS float8[])
      ) AS b(w, s, e, n)
      JOIN citizen_place p ON {POINT_KEY} <@ box(point(b.w, b.s), point(b.e, b.n))
      WHERE p.country = :country{i}
      EXCEPT
      SELECT p.id FROM unnest(CAST(:land{i} AS bytea[])) AS l(w)
      CROSS JOIN LATERAL {_wkb("l.w")} AS land(g)
      JOIN citizen_place p ON {_covered_by("land.g")}
    ), pts AS MATERIALIZED (
      SELECT p.id, p.lon, p.lat, {GEOGRAPHY} AS g FROM sea JOIN citizen_place p ON p.id = sea.id
    ), near AS MATERIALIZED (
      SELECT x.id, x.lon, x.lat, min(x.d) AS d FROM coast c CROSS JOIN LATERAL (
        SELECT s.id, s.lon, s.lat, ST_Distance(c.g, s.g) AS d FROM pts s
        WHERE s.lon BETWEEN c.west AND c.east AND s.lat BETWEEN c.south AND c.north
        AND ST_DWithin(c.g, s.g, :sea)
      ) x GROUP BY x.id, x.lon, x.lat
    ), beaten AS MATERIALIZED (
      SELECT DISTINCT x.id FROM rival r CROSS JOIN LATERAL (
        SELECT n.id FROM near n
        WHERE n.lon BETWEEN r.west AND r.east AND n.lat BETWEEN r.south AND r.north
        AND ST_DWithin(r.g, {_geography("n")}, n.d + :tie)
        AND (r.rank < :own{i} OR ST_Distance(r.g, {_geography("n")}) < n.d - :tie)
      ) x
    )
    SELECT {_PLACE} FROM near JOIN citizen_place p ON p.id = near.id
    WHERE near.id NOT IN (SELECT id FROM beaten)
    )"""  # noqa: S608 - our fragments; values are bound


_LINE_VERTICES = 64


def _lines(geometry: shapely.Geometry) -> list[shapely.LineString]:
    """The rings of a (multi)polygon as lines of at most _LINE_VERTICES vertices. Long edges
    are split as the engine splits them: geography draws an edge as a great circle, and a
    50 km edge bows 30 m away from the straight lon/lat line the engine measures to."""
    lines = []
    rings = shapely.get_rings(shapely.get_parts(geometry))
    for ring in shapely.segmentize(rings, waters.SEGMENT_DEG).tolist():
        coords = shapely.get_coordinates(ring)
        step = _LINE_VERTICES - 1
        lines.extend(
            shapely.LineString(coords[lo : lo + _LINE_VERTICES])
            for lo in range(0, len(coords) - 1, step)
        )
    return lines


@dataclass(frozen=True)
class _Sea:
    """What the SQL needs of a province's territorial sea, as WKB and plain arrays."""

    coast: list[bytes]  # the province's rings as lines (a line twice when its reach wraps ±180)
    coast_boxes: tuple[list[float], ...]  # west, south, east, north of each line's reach
    land: list[bytes]  # polygon pieces of it and its neighbours that reach its sea
    rivals: list[bytes]  # lines of its country's neighbours that can be nearer
    rival_boxes: tuple[list[float], ...]
    rival_ranks: list[int]


@cache
def _waters_of(code: str) -> _Sea:
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
    coast, coast_boxes, _ = _with_reach(_lines(index.territories.geometries[own]))
    rival_lines, rival_boxes, of_line = _with_reach(rivals)
    return _Sea(
        coast, coast_boxes, _to_wkb(land), rival_lines, rival_boxes, [ranks[i] for i in of_line]
    )


def _with_reach(
    lines: list[shapely.LineString],
) -> tuple[list[bytes], tuple[list[float], ...], list[int]]:
    """Each line's WKB once per box of its 12-nm reach, the boxes as four arrays (west, south,
    east, north), and which line each row is."""
    rows, boxes = [], []
    for i, line in enumerate(lines):
        for box in waters.reach_boxes(*line.bounds):
            rows.append(i)
            boxes.append(box)
    wkb = _to_wkb(lines)
    sides = tuple(list(side) for side in zip(*boxes, strict=True)) or ([], [], [], [])
    return [wkb[i] for i in rows], sides, rows


def _touches_any(boxes: list[waters.Box], geometry: shapely.Geometry) -> bool:
    west, south, east, north = geometry.bounds
    return any(w <= east and west <= e and s <= north and south <= n for w, s, e, n in boxes)


def _to_wkb(geometries: list) -> list[bytes]:
    return shapely.to_wkb(np.array(geometries, dtype=object)).tolist() if geometries else []


# A drill (:exercise) reaches only citizens who opted in to exercises.
_WINDOW = f"""
    {alerted_sql("c")} AND (NOT :exercise OR c.exercises) AND (
      (p.kind = 'current' AND :active_now)
      OR (p.kind = 'stay' AND p.ends_on >= GREATEST(:start, :on_from) AND p.starts_on <= :end)
    )
"""


# A matched place the citizen is not at yet: a stay not begun, or any place before the advisory
# is in effect (as geo.matching.match_with_ahead). Told ahead when every matched place is so.
# A stay has begun from midnight of its first day on its country's clock where it keeps one
# (:clocks, {code: seconds east of UTC}: a jsonb look-up, 5 times cheaper than array_position
# over some 200 codes), else on the sun's clock at its longitude east
# of Greenwich, 4 minutes a degree, and from midnight UTC west of it: as
# geo.matching.Today.begun, which reads the clock only of a stay whose first midnight lies
# between UTC+14's and UTC-12's (:now_utc is naive UTC, as `date + interval` is).
_BEGUN = """CASE WHEN p.kind = 'current' THEN TRUE
    WHEN p.starts_on + interval '12 hours' <= :now_utc THEN TRUE
    WHEN p.starts_on - interval '14 hours' > :now_utc THEN FALSE
    ELSE p.starts_on - make_interval(secs => COALESCE(
      (CAST(:clocks AS jsonb) ->> p.country)::float8,
      GREATEST(COALESCE(p.lon, 0), 0) * 240)) <= :now_utc END"""
_AHEAD = f"NOT (:active_now AND {_BEGUN})"
# (PostgreSQL computes the two identical aggregates of the insert below once.)
_ALL_AHEAD = f"bool_and({_AHEAD})"


def matched_ids(
    connection: Connection,
    *,
    target: matching.Target,
    today: matching.Today,
    exercise: bool = False,
) -> list[int]:
    """Citizen ids the target reaches (a drill: only those who opted in), computed by PostGIS."""
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
        {**params, **_window_params(target, today, exercise=exercise)},
    )
    return [row[0] for row in rows]


def enqueue(
    connection: Connection,
    *,
    target: matching.Target,
    revision: int,
    today: matching.Today,
    now: datetime,
    priority: int = DEFAULT_PRIORITY,
    exercise: bool = False,
) -> int:
    """Match and enqueue in one statement; returns the new alert rows. `priority` is their
    urgency class (service/ledger/priority.py), from the advisory's level, one class later for
    rows told ahead; an `exercise` reaches only citizens who opted in."""
    hits, params = reach_sql(target.area)
    for statement in _PLAN:
        connection.execute(text(statement))
    insert = (
        f"INSERT INTO alert ({COLUMNS}, told_ahead)"  # noqa: S608
        f" SELECT :advisory_id, :revision, c.id, ch.channel, CASE WHEN {_ALL_AHEAD}"
        " THEN :ahead_priority ELSE :priority END,"
        f" '{states.PENDING}', :now, CASE WHEN {_ALL_AHEAD} THEN 1 ELSE 0 END"
        f" FROM ({hits}) p JOIN citizen c ON c.id = p.citizen_id"
        " CROSS JOIN LATERAL (VALUES ('sms', c.notify_sms), ('email', c.notify_email))"
        "   AS ch(channel, wanted)"
        f" WHERE ch.wanted AND {_WINDOW}"
        " GROUP BY c.id, ch.channel"
    )
    values = {
        **params,
        **_window_params(target, today, exercise=exercise),
        "advisory_id": target.key,
        "revision": revision,
        "priority": priority,
        "ahead_priority": told_ahead(priority),
        "now": now,
    }
    # A revision is usually new to the ledger: a plain INSERT skips the speculative insertion
    # ON CONFLICT pays per row (a third of the insert). One that has rows already (swept while
    # not yet effective, then against everyone once it is) goes straight to ON CONFLICT: a plain
    # INSERT would run up to its first duplicate and then again (at 10M citizens 3.2 s for
    # 51,571 alerts, three times a new advisory's cost per alert). If another path gets there
    # between the look and the insert, the key refuses it and the statement runs again.
    if not connection.execute(
        _HAS_ROWS, {"advisory_id": target.key, "revision": revision}
    ).scalar():
        try:
            with connection.begin_nested():
                return connection.execute(text(insert), values).rowcount or 0
        except IntegrityError as error:
            if not isinstance(error.orig, UniqueViolation):
                raise
    return connection.execute(text(insert + ON_CONFLICT), values).rowcount or 0


# One probe of the ledger's key (its first two columns).
_HAS_ROWS = text(
    "SELECT EXISTS (SELECT 1 FROM alert WHERE advisory_id = :advisory_id AND revision = :revision)"
)


_EPOCH = date(1970, 1, 1)


def _window_params(
    target: matching.Target, today: matching.Today, *, exercise: bool
) -> dict[str, object]:
    return {
        "exercise": exercise,
        "active_now": target.active_now,
        "start": _EPOCH + timedelta(days=target.start_day),
        "end": _EPOCH + timedelta(days=min(target.end_day, 2_000_000)),  # FOREVER: year 7445
        "on_from": _EPOCH + timedelta(days=today.on_from),
        "now_utc": datetime(1970, 1, 1) + timedelta(seconds=today.now_s),
        "clocks": json.dumps(today.clocks),
    }
