"""Coastal and island places get their country (and province) by the 12-nautical-mile rule, the
same from the engine and from PostGIS (ST_DWithin on geography); places farther out at sea get
none. Coordinates are the real places' (checked by hand on a map)."""

import numpy as np
import shapely
from sqlalchemy import text

from service.geo import countries, matching, subdivisions, waters
from service.geo.areas import area_from_json
from service.geomatch import postgis, targets
from service.geomatch.places import load_reachable
from tests.advisories.builders import advisory_body
from tests.builders import register, stay
from tests.geomatch.builders import NOW, advisory, citizen

# (place, lat, lon, country, province or "" where not asserted); "at sea" = on no polygon of
# the shipped boundaries, the case the rule is for.
PLACES = [
    # Asia and the Pacific
    ("Kuta beach, Bali (at sea)", -8.7184, 115.1686, "ID", "ID-BA"),
    ("White Beach, Boracay (at sea)", 11.9630, 121.9250, "PH", "PH-AKL"),
    ("Palm Jumeirah, Dubai (at sea)", 25.1124, 55.1390, "AE", "AE-DU"),
    ("Gili Trawangan (at sea)", -8.3500, 116.0400, "ID", "ID-NB"),
    ("Siloso beach, Sentosa (at sea)", 1.2540, 103.8100, "SG", ""),
    ("Ti Top island, Ha Long Bay (at sea)", 20.8500, 107.0900, "VN", "VN-13"),
    ("Vaitape, Bora Bora (at sea)", -16.5004, -151.7415, "PF", None),
    ("Patong beach, Phuket", 7.8960, 98.2960, "TH", "TH-83"),
    ("Haeundae beach, Busan", 35.1587, 129.1604, "KR", "KR-26"),
    ("Jungmun beach, Jeju", 33.2446, 126.4110, "KR", "KR-49"),
    ("Naha harbour, Okinawa", 26.2124, 127.6792, "JP", "JP-47"),
    ("Nha Trang beach", 12.2388, 109.1967, "VN", "VN-34"),
    ("Pantai Cenang, Langkawi", 6.2906, 99.7276, "MY", "MY-02"),
    ("Baga beach, Goa", 15.5553, 73.7517, "IN", "IN-GA"),
    ("Unawatuna", 6.0097, 80.2486, "LK", "LK-31"),
    ("Male", 4.1755, 73.5093, "MV", ""),
    ("Waikiki beach, Honolulu", 21.2766, -157.8278, "US", "US-HI"),
    ("Bondi beach, Sydney", -33.8908, 151.2743, "AU", "AU-NSW"),
    # Europe
    ("Oia, Santorini (at sea)", 36.4618, 25.3753, "GR", "GR-L"),
    ("Marina Grande, Capri (at sea)", 40.5560, 14.2380, "IT", "IT-NA"),
    ("Old port, Dubrovnik (at sea)", 42.6410, 18.1100, "HR", "HR-19"),
    ("Helgoland (at sea)", 54.1820, 7.8850, "DE", "DE-SH"),
    ("Levante beach, Benidorm (at sea)", 38.5350, -0.1200, "ES", "ES-A"),
    ("Port Hercule, Monaco: in no French department", 43.7347, 7.4206, "MC", None),
    ("Gibraltar: in no Spanish province", 36.1408, -5.3536, "GI", None),
    ("Grand Harbour, Valletta", 35.8989, 14.5146, "MT", "MT-60"),
    ("Promenade des Anglais, Nice", 43.6950, 7.2650, "FR", "FR-06"),
    ("Torshavn harbour", 62.0110, -6.7710, "FO", None),
    ("Saint-Malo", 48.6490, -2.0260, "FR", "FR-35"),
    ("Reykjavik old harbour", 64.1500, -21.9400, "IS", ""),
    # Africa
    ("V&A Waterfront, Cape Town (at sea)", -33.9036, 18.4210, "ZA", "ZA-WC"),
    ("Goree island, Dakar (at sea)", 14.6670, -17.3990, "SN", "SN-DK"),
    ("Stone Town, Zanzibar", -6.1630, 39.1890, "TZ", "TZ-15"),
    ("Hurghada", 27.2579, 33.8116, "EG", "EG-BA"),
    ("Grand Baie, Mauritius", -20.0130, 57.5800, "MU", ""),
    ("Beau Vallon, Mahe", -4.6160, 55.4300, "SC", "SC-08"),
    # The Americas
    ("Hotel zone, Cancun (at sea)", 21.1330, -86.7470, "MX", "MX-ROO"),
    ("Puerto Ayora, Galapagos (at sea)", -0.7460, -90.3130, "EC", "EC-W"),
    ("Ushuaia harbour, Chile 13 km across (at sea)", -54.8060, -68.3050, "AR", "AR-V"),
    ("Key West", 24.5551, -81.7800, "US", "US-FL"),
    ("Malecon, Havana", 23.1440, -82.3600, "CU", "CU-03"),
    ("Bridgetown, Barbados", 13.0960, -59.6140, "BB", "BB-08"),
    ("Copacabana, Rio de Janeiro", -22.9711, -43.1822, "BR", "BR-RJ"),
    # In two countries' waters: the nearer one
    ("Dover strait, 14 km off Dover, 19 km off France", 51.027, 1.458, "GB", "GB-KEN"),
    ("Dover strait, 14 km off Cap Gris-Nez, 19 km off England", 50.983, 1.492, "FR", "FR-62"),
    ("Oresund, 1 km off Kronborg, 3 km off Helsingborg", 56.040, 12.640, "DK", ""),
    # Out at sea: within and beyond 12 nautical miles
    ("17 km off Cabo da Roca", 38.78, -9.70, "PT", "PT-11"),
    ("39 km off Cabo da Roca", 38.78, -9.95, None, None),
    ("28 km south of Oahu", 21.0, -157.85, None, None),
    ("mid-Atlantic", 30.0, -30.0, None, None),
    ("mid-Pacific", 0.0, -140.0, None, None),
    ("Bay of Bengal", 15.0, 88.0, None, None),
    ("south Indian Ocean", -30.0, 80.0, None, None),
]
LATS = np.array([p[1] for p in PLACES])
LONS = np.array([p[2] for p in PLACES])


def _km_to(code: str, lon: float, lat: float) -> float:
    """Geodesic distance (within a metre) from a point to a country's outline."""
    boundaries = countries.boundaries()
    geometry = boundaries.geometries[[c.code for c in boundaries.countries].index(code)]
    lines = shapely.get_coordinates(shapely.boundary(geometry))
    x, y = waters.local_xy(lat, lon, lines[:, 1], lines[:, 0])
    return shapely.distance(shapely.Point(0, 0), shapely.LineString(np.column_stack([x, y])))


def test_the_table_covers_several_continents_and_the_sea():
    assert len(PLACES) >= 40
    at_sea = countries.boundaries().territories.covering(LONS, LATS) == waters.UNCOVERED
    # The table exercises the rule: most coastal places here lie off the shipped coastlines.
    assert at_sea.sum() >= 25
    assert [
        p[0] for p, sea in zip(PLACES, at_sea, strict=True) if "(at sea)" in p[0] and not sea
    ] == []


def test_coastal_places_get_their_country_and_province_from_the_engine():
    assert countries.boundaries().codes_at(LONS, LATS) == [p[3] for p in PLACES]
    provinces = subdivisions.codes_at(LONS, LATS)
    assert [(p[0], got) for p, got in zip(PLACES, provinces, strict=True) if p[4] != ""] == [
        (p[0], p[4]) for p in PLACES if p[4] != ""
    ]


def test_between_two_countries_waters_the_nearer_country_wins():
    for lat, lon, near, far in [(51.027, 1.458, "GB", "FR"), (50.983, 1.492, "FR", "GB")]:
        assert 12 < _km_to(near, lon, lat) < _km_to(far, lon, lat) < waters.TERRITORIAL_SEA_KM
    assert _km_to("DK", 12.640, 56.040) < _km_to("SE", 12.640, 56.040) < 5


_POSTGIS_COUNTRY = text(
    """
    WITH c AS (
      SELECT ST_GeomFromWKB(w, 4326) AS g, rank
      FROM unnest(CAST(:wkb AS bytea[]), CAST(:rank AS int[])) AS t(w, rank)
    ), pt AS (SELECT ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) AS g)
    SELECT coalesce(
      (SELECT min(rank) FROM c, pt WHERE ST_Covers(c.g, pt.g)),
      (SELECT rank FROM c, pt
        WHERE rank < :nobody AND ST_DWithin(c.g::geography, pt.g::geography, :sea)
        ORDER BY ST_Distance(c.g::geography, pt.g::geography), rank LIMIT 1))
    """
)


def _postgis_country(connection, lon: float, lat: float) -> str | None:
    """The same rule written in PostGIS: the covering polygon, else the nearest country within
    12 nm by ST_DWithin/ST_Distance on geography (the WGS 84 spheroid)."""
    boundaries = countries.boundaries()
    land = boundaries.territories
    reach = [shapely.box(*b) for b in waters.reach_boxes(lon, lat, lon, lat)]
    near = np.unique(np.concatenate([land.tree.query(b) for b in reach]))
    owners = land.owners[near]
    nobody = len(boundaries.countries)  # no one's land ranks after every country
    ranks = np.where(owners == waters.NOBODY, nobody, owners).tolist()
    rank = connection.execute(
        _POSTGIS_COUNTRY,
        {
            "wkb": shapely.to_wkb(land.geometries[near]).tolist(),
            "rank": ranks,
            "lon": lon,
            "lat": lat,
            "sea": waters.TERRITORIAL_SEA_KM * 1000,
            "nobody": nobody,
        },
    ).scalar()
    return None if rank is None or rank == nobody else boundaries.countries[rank].code


def test_each_place_is_registered_with_its_country_and_matched_by_province_on_both_backends(
    db, backend
):
    people = {p[0]: citizen(db, lon=p[2], lat=p[1]) for p in PLACES}
    assert [people[p[0]].places[0].country for p in PLACES] == [p[3] for p in PLACES]
    if backend == "postgresql":
        connection = db.connection()
        assert [_postgis_country(connection, p[2], p[1]) for p in PLACES] == [p[3] for p in PLACES]
    today = matching.Today.at(NOW)
    reachable = load_reachable(db.connection(), today=today)
    for code in sorted({p[4] for p in PLACES if p[4]}):
        record = advisory(db, area={"subdivisions": [code]})
        target = targets.target(targets.live_of(record), area_from_json(record.area), now=NOW)
        engine_ids = matching.match(target, reachable.places, today=today).tolist()
        expected = sorted(people[p[0]].id for p in PLACES if p[4] == code)
        assert (code, engine_ids) == (code, expected)
        if backend == "postgresql":
            assert (code, postgis.matched_ids(db.connection(), target=target, today=today)) == (
                code,
                expected,
            )


def test_a_citizen_registered_on_kuta_beach_is_alerted_by_an_indonesia_advisory(
    client, db, staff_headers
):
    citizen_id, auth, _ = register(client, location={"lat": -8.7184, "lon": 115.1686})
    read = client.get(f"/v1/citizens/{citizen_id}", headers=auth).json()
    assert read["location"]["country"] == "ID"
    consul = staff_headers("consul")
    for area in ({"countries": ["ID"]}, {"subdivisions": ["ID-BA"]}):
        created = client.post("/v1/advisories", json=advisory_body(area=area), headers=consul)
        assert created.status_code == 201, created.text
        public_id = created.json()["id"]
        rows = db.execute(
            text(
                "SELECT count(*) FROM alert JOIN advisory a ON a.id = alert.advisory_id"
                " JOIN citizen c ON c.id = alert.citizen_id"
                " WHERE a.public_id = :advisory AND c.public_id = :citizen"
            ),
            {"advisory": public_id, "citizen": citizen_id},
        ).scalar()
        assert (area, rows) == (area, 2)  # sms and email


def test_a_point_beyond_every_territorial_sea_is_stored_with_a_warning(client):
    citizen_id, auth, _ = register(client, location={"lat": -8.7184, "lon": 115.1686})
    kuta = client.get(f"/v1/citizens/{citizen_id}", headers=auth).json()
    assert kuta["warnings"] == []
    moved = client.put(
        f"/v1/citizens/{citizen_id}/location", json={"lat": 38.78, "lon": -9.95}, headers=auth
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["location"]["country"] is None
    [warning] = moved.json()["warnings"]
    assert warning["field"] == "location"
    assert warning["code"] == "outside-territorial-waters"
    assert "12 nautical miles" in warning["message"]
    stays = [stay(lat=0.0, lon=-140.0), stay(lat=38.78, lon=-9.70)]  # mid-Pacific; 17 km off
    updated = client.patch(f"/v1/citizens/{citizen_id}", json={"stays": stays}, headers=auth)
    assert [w["field"] for w in updated.json()["warnings"]] == ["location", "stays[0]"]


def test_the_warning_is_described_in_the_openapi_schema(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "12-nautical-mile" in schemas["CitizenRead"]["properties"]["warnings"]["description"]
    assert "warnings" in schemas["Registered"]["properties"]
    assert schemas["PlaceWarning"]["properties"]["code"]["const"] == "outside-territorial-waters"


# Where provinces meet the sea: Tokyo Bay (Tokyo, Kanagawa, Chiba), the Pearl River delta
# (Guangdong around Hong Kong and Macau), the Bali strait (Bali, East Java), the Bosphorus.
_COASTS = {
    "Tokyo Bay": ((139.8, 35.5), ("JP-13", "JP-14", "JP-12")),
    "Pearl River delta": ((113.7, 22.3), ("CN-GD",)),
    "Bali strait": ((114.5, -8.3), ("ID-BA", "ID-JI")),
    "Bosphorus": ((29.0, 41.1), ("TR-34",)),
}
# 3.7 km off the corner where Tokyo and Kanagawa meet the bay: equally near both (the same
# vertex), a tie that the lower rank wins on both backends.
_CORNER = (139.82372060949012, 35.49752890010487)


def test_around_coasts_where_provinces_meet_postgis_and_the_engine_agree(db, backend):
    rng = np.random.default_rng(21)
    for (lon, lat), _ in _COASTS.values():
        for dx, dy in zip(rng.uniform(-0.35, 0.35, 150), rng.uniform(-0.3, 0.3, 150), strict=True):
            citizen(db, lon=float(lon + dx), lat=float(lat + dy))
    corner = citizen(db, lon=_CORNER[0], lat=_CORNER[1])
    today = matching.Today.at(NOW)
    reachable = load_reachable(db.connection(), today=today)
    reached = {}
    for _, codes in _COASTS.values():
        for code in codes:
            record = advisory(db, area={"subdivisions": [code]})
            target = targets.target(targets.live_of(record), area_from_json(record.area), now=NOW)
            reached[code] = matching.match(target, reachable.places, today=today).tolist()
            if backend == "postgresql":
                postgis_ids = postgis.matched_ids(db.connection(), target=target, today=today)
                assert (code, postgis_ids) == (code, reached[code])
    assert all(reached.values())
    assert corner.id in reached["JP-13"] and corner.id not in reached["JP-14"]


# Waters two countries share: the nearer one takes each point, on both backends.
_STRAITS = {
    "Dover strait": ((1.45, 51.0), {"GB", "FR"}),
    "Oresund": ((12.65, 56.0), {"DK", "SE"}),
    "Singapore strait": ((103.9, 1.2), {"SG", "ID"}),
    "Beagle channel": ((-68.3, -54.9), {"AR", "CL"}),
}


def test_in_waters_two_countries_share_the_engine_and_postgis_pick_the_same(db, backend):
    rng = np.random.default_rng(5)
    for (lon, lat), expected in _STRAITS.values():
        lons, lats = lon + rng.uniform(-0.2, 0.2, 12), lat + rng.uniform(-0.12, 0.12, 12)
        engine_codes = countries.boundaries().codes_at(lons, lats)
        assert set(engine_codes) >= expected
        if backend == "postgresql":
            connection = db.connection()
            assert [
                _postgis_country(connection, float(x), float(y))
                for x, y in zip(lons, lats, strict=True)
            ] == engine_codes
