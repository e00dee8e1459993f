"""Quiet hours without a database: the offline time-zone look-up, and the window on the local
clock across daylight saving changes. Every expected instant is computed here with zoneinfo
from the local wall time it should be, not taken from the code under test."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from service.dispatch.quiet_hours import Place, parse_hhmm, quiet_until, zone_of
from service.geo import clocks

NEW_YORK, SYDNEY = "America/New_York", "Australia/Sydney"


def local(zone: str, *args: int, fold: int = 0) -> datetime:
    """A wall-clock reading in `zone`, as an aware UTC instant."""
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


@pytest.mark.parametrize(
    ("lat", "lon", "zone"),
    [
        (37.5665, 126.9780, "Asia/Seoul"),
        (13.7563, 100.5018, "Asia/Bangkok"),
        (40.7128, -74.0060, NEW_YORK),
        (-33.8688, 151.2093, SYDNEY),
        (34.0522, -118.2437, "America/Los_Angeles"),
    ],
)
def test_the_zone_of_a_point_is_found_offline(lat, lon, zone):
    assert zone_of(Place(lat=lat, lon=lon, country=None)) == zone


@pytest.mark.parametrize(
    ("country", "zones"),
    [
        ("TH", {"Asia/Bangkok"}),  # one zone in the tz database: that one
        ("KR", {"Asia/Seoul"}),
        ("JP", {"Asia/Tokyo"}),
        # several: the zone at a point inside the country's largest polygon
        ("US", {"America/Chicago", "America/Denver", NEW_YORK, "America/Los_Angeles"}),
        ("AU", {"Australia/Darwin", "Australia/Adelaide", "Australia/Brisbane", SYDNEY}),
    ],
)
def test_a_country_only_place_gets_a_zone_of_that_country(country, zones):
    assert zone_of(Place(lat=None, lon=None, country=country)) in zones


def test_a_point_without_a_zone_falls_back_to_its_country_and_nearby_points_share_the_cache():
    clocks.zone_at.cache_clear()
    assert zone_of(Place(lat=13.75631, lon=100.50181, country="TH")) == "Asia/Bangkok"
    assert zone_of(Place(lat=13.75628, lon=100.50176, country="TH")) == "Asia/Bangkok"
    info = clocks.zone_at.cache_info()
    assert (info.misses, info.hits) == (1, 1)  # rounded to about 100 m: one look-up
    assert zone_of(Place(lat=None, lon=None, country=None)) is None


@pytest.mark.parametrize(
    ("zone", "now", "ends"),
    [
        # New York, clocks go forward at 02:00 on 2026-03-08: the night is an hour shorter.
        (NEW_YORK, local(NEW_YORK, 2026, 3, 7, 23, 30), local(NEW_YORK, 2026, 3, 8, 7, 0)),
        (NEW_YORK, local(NEW_YORK, 2026, 3, 8, 1, 59), local(NEW_YORK, 2026, 3, 8, 7, 0)),
        (NEW_YORK, local(NEW_YORK, 2026, 3, 8, 3, 0), local(NEW_YORK, 2026, 3, 8, 7, 0)),
        # ... and back at 02:00 on 2026-11-01: an hour longer.
        (NEW_YORK, local(NEW_YORK, 2026, 10, 31, 23, 30), local(NEW_YORK, 2026, 11, 1, 7, 0)),
        # Sydney: summer time ends at 03:00 on 2026-04-05, begins at 02:00 on 2026-10-04.
        (SYDNEY, local(SYDNEY, 2026, 4, 4, 22, 0), local(SYDNEY, 2026, 4, 5, 7, 0)),
        (SYDNEY, local(SYDNEY, 2026, 10, 3, 23, 59), local(SYDNEY, 2026, 10, 4, 7, 0)),
        (SYDNEY, local(SYDNEY, 2026, 10, 4, 6, 59), local(SYDNEY, 2026, 10, 4, 7, 0)),
        # No daylight saving: Bangkok and Seoul, after midnight and before it.
        (
            "Asia/Bangkok",
            local("Asia/Bangkok", 2026, 7, 1, 0, 0),
            local("Asia/Bangkok", 2026, 7, 1, 7, 0),
        ),
        (
            "Asia/Seoul",
            local("Asia/Seoul", 2026, 12, 31, 22, 0),
            local("Asia/Seoul", 2027, 1, 1, 7, 0),
        ),
    ],
)
def test_the_window_ends_at_seven_local_across_a_dst_change(zone, now, ends):
    found = quiet_until(now, start="22:00", end="07:00", zone=zone)
    assert found is not None and found.until == ends and found.zone == zone
    assert found.until.tzinfo is not None and found.until.utcoffset().total_seconds() == 0


def test_the_dst_nights_have_the_length_the_clocks_give():
    spring = quiet_until(
        local(NEW_YORK, 2026, 3, 7, 22, 0), start="22:00", end="07:00", zone=NEW_YORK
    )
    autumn = quiet_until(
        local(NEW_YORK, 2026, 10, 31, 22, 0), start="22:00", end="07:00", zone=NEW_YORK
    )
    assert spring is not None and autumn is not None
    assert (spring.until - local(NEW_YORK, 2026, 3, 7, 22, 0)).total_seconds() == 8 * 3600
    assert (autumn.until - local(NEW_YORK, 2026, 10, 31, 22, 0)).total_seconds() == 10 * 3600


@pytest.mark.parametrize(
    ("zone", "now"),
    [
        (NEW_YORK, local(NEW_YORK, 2026, 3, 8, 7, 0)),  # the end itself is outside
        (NEW_YORK, local(NEW_YORK, 2026, 11, 1, 12, 0)),
        (SYDNEY, local(SYDNEY, 2026, 4, 5, 21, 59)),
        ("Asia/Bangkok", local("Asia/Bangkok", 2026, 7, 1, 7, 0)),
    ],
)
def test_outside_the_window_nothing_waits(zone, now):
    assert quiet_until(now, start="22:00", end="07:00", zone=zone) is None


def test_the_start_is_inside_and_a_daytime_window_does_not_cross_midnight():
    start = local("Asia/Seoul", 2026, 7, 1, 22, 0)
    assert quiet_until(start, start="22:00", end="07:00", zone="Asia/Seoul") is not None
    lunch = quiet_until(
        local("Asia/Seoul", 2026, 7, 1, 12, 30), start="12:00", end="13:00", zone="Asia/Seoul"
    )
    assert lunch is not None and lunch.until == local("Asia/Seoul", 2026, 7, 1, 13, 0)
    evening = local("Asia/Seoul", 2026, 7, 1, 23, 0)
    assert quiet_until(evening, start="12:00", end="13:00", zone="Asia/Seoul") is None


@pytest.mark.parametrize(("start", "end"), [("07:00", "07:00"), (None, None), ("22:00", None)])
def test_an_empty_or_missing_window_is_no_quiet_hours(start, end):
    now = local("Asia/Seoul", 2026, 7, 1, 7, 0)
    assert quiet_until(now, start=start, end=end, zone="Asia/Seoul") is None


def test_an_end_the_clocks_skip_is_when_they_jump():
    # 02:30 never happens in New York on 2026-03-08: 01:59:59 EST is followed by 03:00 EDT.
    jump = local(NEW_YORK, 2026, 3, 8, 3, 0)
    assert (jump - local(NEW_YORK, 2026, 3, 8, 1, 59, 59)).total_seconds() == 1
    found = quiet_until(
        local(NEW_YORK, 2026, 3, 8, 1, 0), start="22:00", end="02:30", zone=NEW_YORK
    )
    assert found is not None and found.until == jump
    assert found.until.astimezone(ZoneInfo(NEW_YORK)).strftime("%H:%M %Z") == "03:00 EDT"


def test_an_end_the_clocks_read_twice_is_the_first_reading_still_ahead():
    # 01:30 happens twice in New York on 2026-11-01, first in EDT, then an hour later in EST.
    first = local(NEW_YORK, 2026, 11, 1, 1, 30, fold=0)
    second = local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)
    assert (second - first).total_seconds() == 3600
    before = quiet_until(
        local(NEW_YORK, 2026, 10, 31, 23, 0), start="22:00", end="01:30", zone=NEW_YORK
    )
    assert before is not None and before.until == first
    # 01:10 EST, in the repeated hour: the clock reads 01:30 once more, at `second`.
    again = quiet_until(
        local(NEW_YORK, 2026, 11, 1, 1, 10, fold=1), start="22:00", end="01:30", zone=NEW_YORK
    )
    assert again is not None and again.until == second


@pytest.mark.parametrize("text", ["24:00", "7:00", "07:60", "07-00", "", "0700", "ab:cd"])
def test_hhmm_is_strict(text):
    with pytest.raises(ValueError):
        parse_hhmm(text)
