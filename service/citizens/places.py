"""Turning a submitted location into a stored place: a point with its country, or a country."""

from dataclasses import dataclass

from service.citizens.schemas import LocationIn
from service.errors import InvalidInput, ServiceUnavailable
from service.geo import countries
from service.geo.geocoding import Geocoder, GeocoderBusy, GeocoderFailed, GeocodingDisabled


@dataclass(frozen=True)
class ResolvedPlace:
    source: str
    lat: float | None
    lon: float | None
    country: str | None


class AddressLookupBusy(ServiceUnavailable):
    """An address not looked up: the geocoder's turns are taken. locate() says whether the
    request spent none of them (then a registration's limit is given back)."""

    no_turn_spent = False


def resolve_place(location: LocationIn, *, field: str, geocoder: Geocoder) -> ResolvedPlace:
    """`field` is the JSON path of the location, for error messages."""
    if location.country is not None:
        code = countries.normalise_code(location.country)
        if code is None:
            raise InvalidInput(f"{field}.country", "not an ISO 3166-1 alpha-2 country code")
        return ResolvedPlace("country", None, None, code)
    if location.address is not None:
        try:
            point = geocoder.geocode(location.address)
        except GeocodingDisabled as exc:
            raise InvalidInput(
                f"{field}.address",
                "address look-up is switched off on this server (ANJEON_GEOCODER=none): "
                "send lat and lon, or a country code",
            ) from exc
        except GeocoderBusy as exc:
            raise AddressLookupBusy(
                f"address look-up is busy ({exc}); or give a country code, or lat and lon",
                retry_after_s=exc.retry_after_s,
            ) from exc
        except GeocoderFailed as exc:
            raise ServiceUnavailable(f"the geocoding service failed ({exc}); try again") from exc
        if point is None:
            raise InvalidInput(f"{field}.address", "no place found for this address")
        return _point("address", point.lat, point.lon)
    assert location.lat is not None and location.lon is not None
    return _point("point", location.lat, location.lon)


def _point(source: str, lat: float, lon: float) -> ResolvedPlace:
    # Within 12 nautical miles of a coast a point takes the nearest country (geo/waters.py);
    # farther out it has none, matches only polygon and circle advisories, and the response
    # says so (schemas.place_warnings).
    return ResolvedPlace(source, lat, lon, countries.boundaries().code_at(lon, lat))
