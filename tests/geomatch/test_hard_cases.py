"""The hard cases, each through the database on every backend: places stored, advisory stored,
matched by the same path the service uses, and the alert ledger read back."""

from datetime import timedelta

import pytest
from geopy.distance import geodesic
from shapely.geometry import mapping

from service.geo.areas import check_geometry
from service.geomatch.service import match_advisories
from tests.geomatch.builders import NOW, TODAY, advisory, alerted, citizen


def _geometry(geojson: dict) -> dict:
    return mapping(check_geometry(geojson, field="g", max_vertices=10_000))


def _check(db, area, inside, outside):
    people_in = [citizen(db, lon=lon, lat=lat) for lon, lat in inside]
    people_out = [citizen(db, lon=lon, lat=lat) for lon, lat in outside]
    record = advisory(db, area=area)
    match_advisories(db, advisories=[record], now=NOW)
    got = alerted(db, record)
    assert {p.id for p in people_in} <= got, "someone inside was missed"
    assert not ({p.id for p in people_out} & got), "someone outside was alerted"


ACROSS = [(179.99, 0), (-179.99, 0), (180, 5), (-180, -5), (175, 9)]
AWAY = [(0, 0), (160, 0), (-160, 0), (179.99, 11)]


def test_polygon_split_at_the_antimeridian(db):
    split = {
        "type": "MultiPolygon",
        "coordinates": [
            [[[170, -10], [180, -10], [180, 10], [170, 10], [170, -10]]],
            [[[-180, -10], [-170, -10], [-170, 10], [-180, 10], [-180, -10]]],
        ],
    }
    _check(db, {"geometry": _geometry(split)}, ACROSS, AWAY)


def test_polygon_written_straight_across_the_antimeridian(db):
    straight = {
        "type": "Polygon",
        "coordinates": [[[170, -10], [-170, -10], [-170, 10], [170, 10], [170, -10]]],
    }
    _check(db, {"geometry": _geometry(straight)}, ACROSS, AWAY)


def test_polar_cap(db):
    cap = {
        "type": "Polygon",
        "coordinates": [[[-180, 80], [180, 80], [180, 90], [-180, 90], [-180, 80]]],
    }
    _check(
        db,
        {"geometry": _geometry(cap)},
        [(0, 85), (179.9, 89.9), (-120, 80)],
        [(0, 79.9), (45, 60)],
    )


def test_hole_is_outside_and_boundary_inside(db):
    holed = {
        "type": "Polygon",
        "coordinates": [
            [[10, 10], [20, 10], [20, 20], [10, 20], [10, 10]],
            [[14, 14], [16, 14], [16, 16], [14, 16], [14, 14]],
        ],
    }
    _check(
        db,
        {"geometry": _geometry(holed)},
        inside=[(12, 12), (10, 15), (20, 20), (14, 15), (15, 10)],
        outside=[(15, 15), (9.99, 15), (21, 21)],
    )


def test_multipolygon_of_islands(db):
    islands = {
        "type": "MultiPolygon",
        "coordinates": [
            [[[120, 10], [121, 10], [121, 11], [120, 11], [120, 10]]],
            [[[125, 12], [126, 12], [126, 13], [125, 13], [125, 12]]],
            [[[130, 5], [130.5, 5], [130.5, 5.5], [130, 5.5], [130, 5]]],
        ],
    }
    _check(
        db,
        {"geometry": _geometry(islands)},
        inside=[(120.5, 10.5), (125.5, 12.5), (130.25, 5.25)],
        outside=[(123, 11), (128, 8), (121.5, 10.5)],
    )


def _ring(center, radius_km, inner, outer, bearings=(0, 45, 90, 135, 180, 225, 270, 315)):
    lat, lon = center
    inside = [geodesic(kilometers=radius_km - inner).destination((lat, lon), b) for b in bearings]
    outside = [geodesic(kilometers=radius_km + outer).destination((lat, lon), b) for b in bearings]
    return [(p.longitude, p.latitude) for p in inside], [(p.longitude, p.latitude) for p in outside]


def test_circle_crossing_the_antimeridian(db):
    inside, outside = _ring((0.0, 179.5), 200, inner=0.3, outer=0.3)
    assert any(lon < 0 for lon, _ in inside)  # some of them are across ±180
    _check(db, {"circles": [{"lat": 0.0, "lon": 179.5, "radius_km": 200}]}, inside, outside)


def test_circle_of_2000_km_at_70_north(db):
    # 300 m either side of the edge: haversine alone would misplace some of these.
    inside, outside = _ring((70.0, 20.0), 2000, inner=0.3, outer=0.3)
    _check(db, {"circles": [{"lat": 70.0, "lon": 20.0, "radius_km": 2000}]}, inside, outside)


@pytest.mark.parametrize(
    ("code", "inside", "outside"),
    [
        (
            "UA",
            [(34.1024, 44.9521), (30.52, 50.45)],
            [(37.62, 55.75)],
        ),  # Crimea is UA; Moscow is not
        ("XK", [(21.1655, 42.6629)], [(20.4489, 44.7866)]),  # Pristina, not Belgrade
        ("TW", [(121.5654, 25.0330)], [(116.4074, 39.9042)]),  # Taipei, not Beijing
        ("EH", [(-13.2, 27.15)], [(-7.59, 33.57)]),  # Laayoune, not Casablanca
    ],
)
def test_disputed_areas_follow_the_offline_country_data(db, code, inside, outside):
    _check(db, {"countries": [code]}, inside, outside)


def test_point_at_sea_matches_shapes_but_no_country(db):
    sailor = citizen(db, lon=-30.0, lat=30.0)
    assert sailor.places[0].country is None
    by_country = advisory(db, area={"countries": ["PT", "ES", "US"]})
    by_circle = advisory(db, area={"circles": [{"lat": 30.0, "lon": -30.0, "radius_km": 10}]})
    match_advisories(db, advisories=[by_country, by_circle], now=NOW)
    assert sailor.id not in alerted(db, by_country)
    assert sailor.id in alerted(db, by_circle)


def test_country_only_place_matches_its_country_and_no_shape(db):
    somewhere_in_japan = citizen(db, country="JP")
    by_country = advisory(db, area={"countries": ["JP"]})
    by_circle = advisory(db, area={"circles": [{"lat": 35.68, "lon": 139.69, "radius_km": 500}]})
    match_advisories(db, advisories=[by_country, by_circle], now=NOW)
    assert somewhere_in_japan.id in alerted(db, by_country)
    assert somewhere_in_japan.id not in alerted(db, by_circle)


def test_windows(db):
    square = {"circles": [{"lat": 10.0, "lon": 10.0, "radius_km": 50}]}
    here_now = citizen(db, lon=10.0, lat=10.0)
    coming = citizen(
        db,
        country="KR",
        stays=[(10.0, 10.0, None, TODAY + timedelta(days=3), TODAY + timedelta(days=5))],
    )
    too_late = citizen(
        db,
        country="KR",
        stays=[(10.0, 10.0, None, TODAY + timedelta(days=20), TODAY + timedelta(days=25))],
    )
    ended = citizen(
        db,
        country="KR",
        stays=[(10.0, 10.0, None, TODAY - timedelta(days=5), TODAY - timedelta(days=2))],
    )
    record = advisory(db, area=square, expires=NOW + timedelta(days=10))
    match_advisories(db, advisories=[record], now=NOW)
    got = alerted(db, record)
    assert here_now.id in got and coming.id in got
    assert too_late.id not in got and ended.id not in got


def test_future_advisory_reaches_stays_now_and_current_places_once_effective(db):
    area = {"circles": [{"lat": -20.0, "lon": 50.0, "radius_km": 50}]}
    resident = citizen(db, lon=50.0, lat=-20.0)
    visitor = citizen(
        db,
        country="KR",
        stays=[(50.0, -20.0, None, TODAY + timedelta(days=2), TODAY + timedelta(days=4))],
    )
    record = advisory(
        db, area=area, effective=NOW + timedelta(days=1), expires=NOW + timedelta(days=6)
    )
    match_advisories(db, advisories=[record], now=NOW)
    assert alerted(db, record) == {visitor.id}
    match_advisories(db, advisories=[record], now=NOW + timedelta(days=1, minutes=1))
    assert alerted(db, record) == {visitor.id, resident.id}
