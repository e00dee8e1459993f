"""Offline country look-up: the documented answers for disputed areas, borders and the sea."""

import numpy as np
import pytest

from service.geo import countries

CASES = [
    ("Seoul", 126.9780, 37.5665, "KR"),
    ("Paris", 2.3522, 48.8566, "FR"),  # ISO_A2 is -99 for France; ISO_A2_EH is used
    ("Oslo", 10.7522, 59.9139, "NO"),
    ("Pristina", 21.1655, 42.6629, "XK"),
    ("Simferopol, Crimea", 34.1024, 44.9521, "UA"),
    ("Taipei", 121.5654, 25.0330, "TW"),
    ("Laayoune, Western Sahara", -13.2, 27.15, "EH"),
    ("Suva side of the antimeridian", 180.0, -16.5, "FJ"),
    ("Chukotka at -179.99", -179.99, 65.5, "RU"),
    ("mid-Atlantic", -30.0, 30.0, None),
    ("Bir Tawil (claimed by nobody)", 33.75, 21.85, None),
]


@pytest.mark.parametrize(("lon", "lat", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_country_at(lon, lat, code):
    assert countries.boundaries().code_at(lon, lat) == code


def test_vectorised_lookup_matches_single_lookups():
    lons = np.array([c[1] for c in CASES])
    lats = np.array([c[2] for c in CASES])
    assert countries.boundaries().codes_at(lons, lats) == [c[3] for c in CASES]


def test_codes_are_validated():
    assert countries.normalise_code(" kr ") == "KR"
    assert countries.normalise_code("XK") == "XK"
    assert countries.normalise_code("XX") is None
    assert countries.normalise_code("UK") is None  # the ISO code is GB


def test_fips_codes_are_kept_for_state_department_feeds():
    by_code = {c.code: c for c in countries.boundaries().countries}
    assert by_code["KR"].fips == "KS" and by_code["DE"].fips == "GM" and by_code["GB"].fips == "UK"
    assert by_code["KR"].name_ko == "대한민국"
