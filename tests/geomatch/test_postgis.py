"""PostGIS and the engine give identical pairs on the same data (on PostgreSQL only: SQLite
has no PostGIS, and its matching is the engine itself)."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import shapely
from geopy.distance import geodesic
from shapely.geometry import mapping
from sqlalchemy import event, text

from service.geo import matching
from service.geo.areas import area_from_json, check_geometry
from service.geomatch import postgis, targets
from service.geomatch.places import load_reachable
from tests.geomatch.builders import NOW, advisory, citizen


@pytest.fixture
def pg(db, backend):
    if backend != "postgresql":
        pytest.skip("PostGIS runs in the PostgreSQL tests")
    return db


def _same_answers(db, record):
    live = targets.live_of(record)
    target = targets.target(live, area_from_json(record.area), now=NOW)
    today = matching.Today.at(NOW)
    reachable = load_reachable(db.connection(), today=today)
    engine_ids = matching.match(target, reachable.places, today=today).tolist()
    postgis_ids = postgis.matched_ids(db.connection(), target=target, today=today)
    assert engine_ids == postgis_ids
    return engine_ids


def _g(geojson):
    return mapping(check_geometry(geojson, field="g", max_vertices=10_000))


SCENARIOS = {
    "split at the antimeridian": {
        "geometry": _g(
            {
                "type": "MultiPolygon",
                "coordinates": [
                    [[[170, -10], [180, -10], [180, 10], [170, 10], [170, -10]]],
                    [[[-180, -10], [-170, -10], [-170, 10], [-180, 10], [-180, -10]]],
                ],
            }
        )
    },
    "straight across": {
        "geometry": _g(
            {
                "type": "Polygon",
                "coordinates": [[[170, -10], [-170, -10], [-170, 10], [170, 10], [170, -10]]],
            }
        )
    },
    "polar cap": {
        "geometry": _g(
            {
                "type": "Polygon",
                "coordinates": [[[-180, 80], [180, 80], [180, 90], [-180, 90], [-180, 80]]],
            }
        )
    },
    "hole": {
        "geometry": _g(
            {
                "type": "Polygon",
                "coordinates": [
                    [[10, 10], [20, 10], [20, 20], [10, 20], [10, 10]],
                    [[14, 14], [16, 14], [16, 16], [14, 16], [14, 14]],
                ],
            }
        )
    },
    "circle across ±180": {"circles": [{"lat": 0.0, "lon": 179.5, "radius_km": 200}]},
    "2000 km at 70N": {"circles": [{"lat": 70.0, "lon": 20.0, "radius_km": 2000}]},
    "countries": {"countries": ["UA", "XK", "TW", "EH"]},
    "province": {"subdivisions": ["TH-10"]},
}


def _people(db):
    rng = np.random.default_rng(7)
    points = [
        (179.99, 0),
        (-179.99, 0),
        (180, 5),
        (-180, -5),
        (0, 85),
        (15, 15),
        (10, 15),
        (20, 20),
        (34.1, 44.95),
        (21.17, 42.66),
        (121.56, 25.03),
        (-13.2, 27.15),
        (100.5, 13.75),
        (-30.0, 30.0),
    ]
    for bearing in range(0, 360, 30):  # 300 m either side of the 2,000 km circle's edge
        for km in (1999.7, 2000.3):
            p = geodesic(kilometers=km).destination((70.0, 20.0), bearing)
            points.append((p.longitude, p.latitude))
    points += list(zip(rng.uniform(-180, 180, 400), rng.uniform(-85, 85, 400), strict=True))
    for lon, lat in points:
        citizen(db, lon=float(lon), lat=float(lat))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_postgis_agrees_with_the_engine(pg, name):
    _people(pg)
    record = advisory(pg, area=SCENARIOS[name])
    assert _same_answers(pg, record)  # and it reaches someone


def test_postgis_enqueue_writes_the_same_rows(pg):
    _people(pg)
    record = advisory(pg, area=SCENARIOS["2000 km at 70N"])
    ids = _same_answers(pg, record)
    target = targets.target(targets.live_of(record), area_from_json(record.area), now=NOW)
    written = postgis.enqueue(
        pg.connection(), target=target, revision=1, today=matching.Today.at(NOW), now=NOW
    )
    assert written == len(ids)  # every one of them has sms only
    again = postgis.enqueue(
        pg.connection(), target=target, revision=1, today=matching.Today.at(NOW), now=NOW
    )
    assert again == 0


def _alert_inserts(pg, call) -> tuple[int, list[str]]:
    """What `call` wrote, and the INSERT INTO alert statements it sent to the server."""
    sent: list[str] = []

    def record(conn, cursor, statement, *args):
        if statement.startswith("INSERT INTO alert"):
            sent.append(statement)

    connection = pg.get_bind()  # the test's session runs on one connection
    event.listen(connection, "before_cursor_execute", record)
    try:
        return call(), sent
    finally:
        event.remove(connection, "before_cursor_execute", record)


def test_a_revision_with_rows_already_goes_straight_to_on_conflict(pg, monkeypatch):
    # An advisory swept while not yet effective has some rows when it is swept against
    # everyone; a plain INSERT would run up to its first duplicate, fail and run again.
    _people(pg)
    record = advisory(pg, area=SCENARIOS["2000 km at 70N"])
    target = targets.target(targets.live_of(record), area_from_json(record.area), now=NOW)
    today = matching.Today.at(NOW)

    def enqueue():
        return postgis.enqueue(pg.connection(), target=target, revision=1, today=today, now=NOW)

    written, sent = _alert_inserts(pg, enqueue)
    assert written > 2
    assert len(sent) == 1 and "ON CONFLICT" not in sent[0]  # new to the ledger: the plain one
    mine = {"id": record.id}
    pg.execute(
        text(
            "DELETE FROM alert WHERE id IN (SELECT id FROM alert WHERE advisory_id = :id"
            " ORDER BY citizen_id DESC LIMIT 2)"
        ),
        mine,
    )
    again, sent = _alert_inserts(pg, enqueue)
    assert again == 2
    assert len(sent) == 1 and "ON CONFLICT" in sent[0]
    # Another path got there between the probe and the insert: the key still keeps it once.
    monkeypatch.setattr(postgis, "_HAS_ROWS", text("SELECT false"))
    pg.execute(
        text("DELETE FROM alert WHERE id IN (SELECT min(id) FROM alert WHERE advisory_id = :id)"),
        mine,
    )
    raced, sent = _alert_inserts(pg, enqueue)
    assert raced == 1
    assert len(sent) == 2 and "ON CONFLICT" not in sent[0] and "ON CONFLICT" in sent[1]
    count = "SELECT count(*) FROM alert WHERE advisory_id = :id"
    assert pg.execute(text(count), mine).scalar() == written


def _spiky_star(vertices: int) -> dict:
    """A ring of spikes around (30°E, 10°N), like a detailed coastline or border."""
    rng = np.random.default_rng(11)
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = rng.uniform(3, 6, vertices)
    ring = np.column_stack([30 + radii * np.sin(angles), 10 + radii * np.cos(angles)]).tolist()
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def test_long_rings_are_cut_into_small_valid_pieces_covering_the_same_ground():
    part = check_geometry(_spiky_star(3000), field="g", max_vertices=10_000).geoms[0]
    cut = postgis.pieces(part)
    assert len(cut) > 20
    assert max(shapely.get_num_coordinates(piece) for piece in cut) <= postgis._PIECE_VERTICES
    assert all(piece.is_valid for piece in cut)
    assert shapely.union_all(cut).symmetric_difference(part).area < 1e-9


def test_postgis_on_a_long_ring_agrees_with_the_engine_at_vertices_and_around(pg):
    # Not at mid-edge points: where a cut crosses an edge the new vertex is rounded, so a point
    # within ~1e-15° of that edge can fall either side (measured: 23 of 214 mid-edge points).
    geojson = _spiky_star(1500)
    ring = np.array(geojson["coordinates"][0])
    rng = np.random.default_rng(5)
    points = [tuple(p) for p in ring[:-1:5]]  # on the boundary, at vertices
    points += list(zip(rng.uniform(24, 36, 400), rng.uniform(4, 16, 400), strict=True))
    for lon, lat in points:
        citizen(pg, lon=float(lon), lat=float(lat))
    record = advisory(pg, area={"geometry": _g(geojson)})
    ids = _same_answers(pg, record)
    assert len(ids) > 300  # the vertices at least


def test_a_polygons_places_are_read_from_the_point_index_alone(pg):
    # The index includes every column the polygon look-up reads (migration 0020), so PostGIS
    # never visits the scattered table rows for it. With table and bitmap scans turned off the
    # planner picks between a plain and an index-only scan of the point index; it takes the
    # index-only one only while the index covers every column read (checked: with one column
    # left out of the index, the plan is a plain Index Scan and this fails).
    citizen(pg, lon=30.0, lat=10.0)
    area = area_from_json({"geometry": _g(_spiky_star(600))})
    hits, params = postgis.reach_sql(area)
    assert "pieces" in params  # the cut path
    for statement in postgis._PLAN:
        pg.execute(text(statement))
    for setting in ("enable_seqscan", "enable_bitmapscan"):
        pg.execute(text(f"SET LOCAL {setting} = off"))
    plan = "\n".join(pg.execute(text(f"EXPLAIN SELECT * FROM ({hits}) p"), params).scalars())
    assert "Index Only Scan using ix_citizen_place_point on citizen_place" in plan, plan
    assert "Seq Scan on citizen_place" not in plan, plan


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 12, 1, 12, tzinfo=UTC),
        datetime(2026, 12, 1, 10, tzinfo=UTC),  # UTC+14's midnight: the band's edge
        datetime(2026, 12, 1, 13, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=UTC),  # Europe's clocks go forward
    ],
)
def test_postgis_decides_begun_as_the_engine_does(pg, now):
    """Whether a stay has begun (a current place, one day or another, a point east or west, a
    country of one clock, of several, none, unknown): the same answer from both."""
    rng = np.random.default_rng(7)
    codes = ["JP", "KR", "WS", "BE", "FR", "US", "RU", "", None, "XK"]
    lons = [None, 0.0, 180.0, -180.0, 139.69, -171.76, 55.45, 4.35, -118.24]
    rows = [
        (
            i,
            "current" if i % 20 == 0 else "stay",
            now.date() + timedelta(days=int(rng.integers(-2, 3))),
            lons[int(rng.integers(len(lons)))] if i % 3 else float(rng.uniform(-180, 180)),
            codes[int(rng.integers(len(codes)))],
        )
        for i in range(2_000)
    ]
    today = matching.Today.at(now)
    pg.execute(
        text("CREATE TEMP TABLE p (id int, kind text, starts_on date, lon float8, country text)")
    )
    pg.execute(
        text("INSERT INTO p VALUES (:id, :kind, :starts_on, :lon, :country)"),
        [
            dict(zip(("id", "kind", "starts_on", "lon", "country"), row, strict=True))
            for row in rows
        ],
    )
    target = matching.Target(1, area_from_json({"countries": ["JP"]}), 0, 10**6, True)
    params = postgis._window_params(target, today, exercise=False)
    by_postgis = dict(pg.execute(text(f"SELECT p.id, {postgis._BEGUN} FROM p"), params).all())
    starts = np.array(
        [
            matching.CURRENT if kind == "current" else matching.day_number(day)
            for _, kind, day, *_ in rows
        ],
        np.int32,
    )
    by_engine = today.begun(
        starts,
        np.array([np.nan if lon is None else lon for *_, lon, _ in rows]),
        np.array([code or "" for *_, code in rows], dtype=object),
    )
    differ = [row for row, mine in zip(rows, by_engine, strict=True) if by_postgis[row[0]] != mine]
    assert differ == []
    assert 0 < int(by_engine.sum()) < len(rows)  # both answers occur
