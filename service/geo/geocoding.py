"""Turning an address into a point, behind a small interface so tests and operators can swap it."""

from dataclasses import dataclass
from typing import Protocol

from geopy.adapters import BaseSyncAdapter
from geopy.exc import GeopyError
from geopy.extra.rate_limiter import RateLimiter
from geopy.geocoders import Nominatim


@dataclass(frozen=True)
class GeocodedPoint:
    lat: float
    lon: float


class GeocodingDisabled(Exception):
    """No geocoder is configured."""


class GeocoderFailed(Exception):
    """The geocoding service could not be reached or answered an error."""


class Geocoder(Protocol):
    def geocode(self, address: str) -> GeocodedPoint | None:
        """The best point for an address, None if the address is unknown."""
        ...


class NoGeocoder:
    def geocode(self, address: str) -> GeocodedPoint | None:
        raise GeocodingDisabled


class NominatimGeocoder:
    """OpenStreetMap Nominatim through geopy, at most one request a second (its usage policy)."""

    def __init__(
        self,
        *,
        user_agent: str,
        timeout_s: float,
        adapter_factory: type[BaseSyncAdapter] | None = None,
        min_delay_s: float = 1.0,
    ) -> None:
        options = {"adapter_factory": adapter_factory} if adapter_factory else {}
        self._nominatim = Nominatim(user_agent=user_agent, timeout=timeout_s, **options)
        self._lookup = RateLimiter(
            self._nominatim.geocode,
            min_delay_seconds=min_delay_s,
            max_retries=0,
            swallow_exceptions=False,
        )

    def geocode(self, address: str) -> GeocodedPoint | None:
        try:
            location = self._lookup(address, exactly_one=True)
        except GeopyError as exc:
            raise GeocoderFailed(type(exc).__name__) from exc
        if location is None:
            return None
        return GeocodedPoint(lat=location.latitude, lon=location.longitude)


def make_geocoder(kind: str, *, user_agent: str, timeout_s: float) -> Geocoder:
    if kind == "nominatim":
        return NominatimGeocoder(user_agent=user_agent, timeout_s=timeout_s)
    return NoGeocoder()
