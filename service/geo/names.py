"""Country names (and the odd alias feeds use) to ISO 3166-1 alpha-2 codes, offline."""

import re
from functools import cache

import pycountry

from service.geo import countries

_ALIASES = {
    "u.s.": "US",
    "usa": "US",
    "united states": "US",
    "burma": "MM",
    "the bahamas": "BS",
    "the gambia": "GM",
    "macau": "MO",
    "kosovo": "XK",
    "bonaire": "BQ",
    "sint eustatius": "BQ",
    "saba": "BQ",
    "mainland china": "CN",
    "turkey": "TR",
}


def _key(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip().lower())


@cache
def _index() -> dict[str, str]:
    index = dict(_ALIASES)
    for country in pycountry.countries:
        for attr in ("name", "official_name", "common_name"):
            value = getattr(country, attr, None)
            if value:
                index.setdefault(_key(value), country.alpha_2)
    for country in countries.boundaries().countries:
        index.setdefault(_key(country.name), country.code)
        if country.name_ko:
            index.setdefault(_key(country.name_ko), country.code)
    return index


# Regions a feed names that are several ISO entities.
_REGIONS = {"french west indies": ("GP", "MQ", "BL", "MF")}


def codes_for_name(name: str) -> tuple[str, ...]:
    """All codes a name stands for (one for a country, several for a named region)."""
    if _key(name) in _REGIONS:
        return _REGIONS[_key(name)]
    code = code_for_name(name)
    return (code,) if code else ()


def code_for_name(name: str) -> str | None:
    """Exact (case-insensitive) match on English/Korean names and aliases, else None."""
    return _index().get(_key(name))


def find_in_text(text: str) -> str | None:
    """The first country named in a free text (for CAP areaDesc without geometry)."""
    lowered = f" {_key(text)} "
    for name, code in sorted(_index().items(), key=lambda item: -len(item[0])):
        long_enough = len(name) >= 4 or name in _ALIASES
        if long_enough and re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", lowered):
            return code
    return None


@cache
def fips_to_iso() -> dict[str, str]:
    """FIPS 10-4 country codes (US State Department feeds) to ISO alpha-2."""
    return {c.fips: c.code for c in countries.boundaries().countries if c.fips}


def alpha3_to_alpha2(code: str) -> str | None:
    country = pycountry.countries.get(alpha_3=code.strip().upper())
    return country.alpha_2 if country else None
