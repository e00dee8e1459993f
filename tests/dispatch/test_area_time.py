"""When an advisory ends, on the clock of the place it covers, in the e-mail a citizen reads:
local time with its zone and offset where the whole area keeps one clock (daylight saving
followed), UTC where its clocks differ."""

import math
from datetime import UTC, datetime

import pytest

from service.dispatch.area_time import area_zone, local_end
from service.dispatch.content import AlertContent
from service.dispatch.render import Renderer

WINTER = datetime(2026, 12, 5, 14, 0, tzinfo=UTC)
SUMMER = datetime(2026, 7, 5, 14, 0, tzinfo=UTC)
BANGKOK = {"circles": [{"lat": 13.75, "lon": 100.5, "radius_km": 30}]}
# Thailand (UTC+7) and Myanmar (UTC+6:30) under one rectangle.
ACROSS_A_BORDER = {
    "geometry": {
        "type": "Polygon",
        "coordinates": [[[95, 10], [105, 10], [105, 20], [95, 20], [95, 10]]],
    }
}


_RING = [
    [100.5 + 0.5 * math.cos(2 * math.pi * k / 5000), 13.75 + 0.5 * math.sin(2 * math.pi * k / 5000)]
    for k in range(5000)
]
BANGKOK_AND_YANGON = {
    "geometry": {
        "type": "MultiPolygon",
        "coordinates": [
            [[*_RING, _RING[0]]],
            [[[96.1, 16.8], [96.2, 16.8], [96.2, 16.9], [96.1, 16.9], [96.1, 16.8]]],
        ],
    }
}


@pytest.mark.parametrize(
    ("area", "at", "zone"),
    [
        (BANGKOK, WINTER, "Asia/Bangkok"),
        ({"countries": ["TH"]}, WINTER, "Asia/Bangkok"),
        ({"subdivisions": ["TH-10"]}, WINTER, "Asia/Bangkok"),
        ({"circles": [{"lat": 51.5, "lon": -0.12, "radius_km": 5}]}, SUMMER, "Europe/London"),
        # Several names, one clock: the tz database's main one.
        ({"countries": ["AR"]}, WINTER, "America/Argentina/Buenos_Aires"),
        # Two countries on one clock.
        ({"countries": ["KR", "JP"]}, WINTER, "Asia/Seoul"),
        # A large polygon over Bangkok, and a small one over Yangon (UTC+6:30) beside it.
        (BANGKOK_AND_YANGON, WINTER, None),
        # Several clocks: no one local time is right for everyone warned.
        ({"countries": ["US"]}, WINTER, None),
        ({"subdivisions": ["US-CA"]}, WINTER, None),
        (ACROSS_A_BORDER, WINTER, None),
        ({"countries": ["KR", "TH"]}, WINTER, None),
        ({}, WINTER, None),
    ],
)
def test_the_one_clock_of_an_area(area, at, zone):
    assert area_zone(area, at) == zone


def test_local_time_names_its_zone_and_offset_and_follows_daylight_saving():
    assert local_end(WINTER, BANGKOK, "en") == (
        "2026-12-05 21:00 (local time, Asia/Bangkok, UTC+07:00)"
    )
    assert local_end(WINTER, BANGKOK, "ko") == (
        "2026-12-05 21:00 (현지 시각, Asia/Bangkok, UTC+07:00)"
    )
    london = {"countries": ["GB"]}
    assert local_end(SUMMER, london, "en").startswith("2026-07-05 15:00 (local time, Europe/London")
    assert local_end(WINTER, london, "en").endswith("UTC+00:00)")
    assert local_end(WINTER, ACROSS_A_BORDER, "en") == "2026-12-05 14:00 UTC"
    # One clock under several names (Seoul, Tokyo), or a nautical zone at sea: the offset only.
    assert local_end(WINTER, {"countries": ["KR", "JP"]}, "en") == (
        "2026-12-05 23:00 (local time, UTC+09:00)"
    )
    at_sea = {"circles": [{"lat": 30.0, "lon": 140.0, "radius_km": 10}]}
    assert local_end(WINTER, at_sea, "en") == "2026-12-05 23:00 (local time, UTC+09:00)"


def test_an_end_past_the_last_day_of_the_calendar_there_is_shown_in_utc():
    """A feed's "until further notice" may be 9999-12-31T23:00Z: in Bangkok that is past year
    9999, which Python cannot hold (it raised OverflowError: a 500 on the preview, and an
    alert that could not be written)."""
    last = datetime(9999, 12, 31, 23, tzinfo=UTC)
    assert local_end(last, BANGKOK, "en") == "9999-12-31 23:00 UTC"


def test_the_email_says_until_when_on_the_areas_clock():
    content = AlertContent(
        advisory_public_id="x",
        revision=1,
        kind="new",
        level="3",
        title={"ko": "방콕 홍수", "en": "Flood in Bangkok"},
        message={"ko": "고지대로", "en": "Move to higher ground"},
        area=BANGKOK,
        source="",
        expires=WINTER,
    )
    renderer = Renderer(sender={"ko": "외교부", "en": "MOFA"}, max_segments=3)
    english = renderer.email(content, language="en", link="https://anjeon.test/a/x").text
    assert "Until: 2026-12-05 21:00 (local time, Asia/Bangkok, UTC+07:00)" in english
    korean = renderer.email(content, language="ko", link="https://anjeon.test/a/x").text
    assert "종료 예정: 2026-12-05 21:00 (현지 시각, Asia/Bangkok, UTC+07:00)" in korean
