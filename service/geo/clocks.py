"""The clock each country keeps, from the tz database shipped in `tzdata` (zone.tab): what
matching needs to know when a traveller's day has begun, without a point-to-zone look-up (which
PostGIS cannot make)."""

from datetime import datetime, timedelta
from functools import cache, lru_cache
from importlib import resources
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@cache
def country_zones() -> dict[str, tuple[str, ...]]:
    """zone.tab of the tz database: each country's zones."""
    text = resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text("utf-8")
    zones: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            code, _, name = line.split("\t")[:3]
            zones.setdefault(code, []).append(name)
    return {code: tuple(names) for code, names in zones.items()}


def one_clock_offsets(at: datetime) -> dict[str, int]:
    """Seconds east of UTC of every country whose zones all keep one clock at `at` (Japan,
    France, Samoa; not the United States, Russia, Australia, nor China, whose Xinjiang the tz
    database gives a clock of its own)."""
    return _one_clock_offsets(at.replace(minute=0, second=0, microsecond=0))


@lru_cache(maxsize=4)
def _one_clock_offsets(hour: datetime) -> dict[str, int]:
    found: dict[str, int] = {}
    for code, names in country_zones().items():
        offsets = {_offset(name, hour) for name in names}
        if len(offsets) == 1 and None not in offsets:
            found[code] = int(next(iter(offsets)).total_seconds())  # type: ignore[union-attr]
    return found


def _offset(name: str, at: datetime) -> timedelta | None:
    try:
        return at.astimezone(ZoneInfo(name)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError, OverflowError):
        return None
