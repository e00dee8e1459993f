"""Registration happy paths, through the real ASGI app, on every backend."""

from typing import Any, ClassVar

import pytest
from geopy.adapters import BaseSyncAdapter
from geopy.exc import GeocoderServiceError
from sqlalchemy import func, select

from service.citizens.models import Citizen, CitizenPlace
from service.geo.geocoding import NominatimGeocoder
from tests.builders import citizen_body, register, stay
from tests.conftest import bound_client


def test_point_registration_is_normalised_and_readable(client):
    citizen_id, auth, body = register(
        client, phone="010-1234-5678", email="Jisu.Kim@Example.COM", stays=[stay(5, 10)]
    )
    record = client.get(f"/v1/citizens/{citizen_id}", headers=auth)
    assert record.status_code == 200
    data = record.json()
    assert data["phone"] == "+821012345678"  # Korean 010 number read as +82
    assert data["email"] == "Jisu.Kim@example.com"
    assert data["channels"] == ["sms", "email"]
    assert data["location"] == {"lat": 37.5665, "lon": 126.978, "country": "KR", "source": "point"}
    assert data["stays"][0]["country"] == "JP"
    assert data["stays"][0]["from"] == body["stays"][0]["from"]
    assert data["status"] == "active"


def test_country_only_registration(client):
    citizen_id, auth, _ = register(client, location={"country": "vn"}, channels=["email"])
    data = client.get(f"/v1/citizens/{citizen_id}", headers=auth).json()
    assert data["location"] == {"lat": None, "lon": None, "country": "VN", "source": "country"}


def test_point_at_sea_has_no_country(client):
    citizen_id, auth, _ = register(client, location={"lat": 30.0, "lon": -30.0})
    assert (
        client.get(f"/v1/citizens/{citizen_id}", headers=auth).json()["location"]["country"] is None
    )


def test_email_only_citizen_needs_no_phone(client):
    body = {"phone": None, "channels": ["email"]}
    citizen_id, auth, _ = register(client, **body)
    assert client.get(f"/v1/citizens/{citizen_id}", headers=auth).json()["phone"] is None


def test_manage_token_is_stored_only_as_a_hash(client, db):
    citizen_id, auth, _ = register(client)
    token = auth["Authorization"].removeprefix("Bearer ")
    stored = db.scalar(select(Citizen).where(Citizen.public_id == citizen_id))
    assert stored.token_hash != token and token not in stored.token_hash
    assert len(stored.token_hash) == 64


class CannedNominatim(BaseSyncAdapter):
    """geopy's own Nominatim parsing, with the HTTP answer canned (no network)."""

    answers: ClassVar[dict[str, Any]] = {
        "Sukhumvit Soi 11, Bangkok": [
            {"lat": "13.7445", "lon": "100.5560", "display_name": "Sukhumvit Soi 11, Bangkok"}
        ],
    }
    requested: ClassVar[list[str]] = []

    def get_json(self, url: str, *, timeout: float, headers: dict[str, str]) -> Any:
        self.requested.append(url)
        if "outage" in url:
            raise GeocoderServiceError("502 from upstream")
        for address, answer in self.answers.items():
            if address.replace(" ", "+").replace(",", "%2C") in url:
                return answer
        return []

    def get_text(self, url: str, *, timeout: float, headers: dict[str, str]) -> str:
        raise AssertionError("Nominatim asks for JSON")


@pytest.fixture
def geocoding_client(settings, db):
    geocoder = NominatimGeocoder(
        user_agent="anjeon-tests", timeout_s=1, adapter_factory=CannedNominatim, turn=lambda: 0.0
    )
    with bound_client(settings, db, geocoder=geocoder) as test_client:
        yield test_client


def test_address_registration_is_geocoded(geocoding_client):
    citizen_id, auth, _ = register(
        geocoding_client, location={"address": "Sukhumvit Soi 11, Bangkok"}
    )
    data = geocoding_client.get(f"/v1/citizens/{citizen_id}", headers=auth).json()
    assert data["location"] == {
        "lat": 13.7445,
        "lon": 100.556,
        "country": "TH",
        "source": "address",
    }
    assert "nominatim" in CannedNominatim.requested[-1]


def test_unknown_address_is_422_and_writes_nothing(geocoding_client, db):
    before = db.scalar(select(func.count()).select_from(Citizen))
    response = geocoding_client.post(
        "/v1/citizens", json=citizen_body(location={"address": "Nowhere Street 999"})
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "location.address", "message": "no place found for this address"}
    ]
    assert db.scalar(select(func.count()).select_from(Citizen)) == before


def test_geocoder_outage_is_503_and_writes_nothing(geocoding_client, db):
    before = db.scalar(select(func.count()).select_from(CitizenPlace))
    response = geocoding_client.post(
        "/v1/citizens", json=citizen_body(location={"address": "outage road 1"})
    )
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"]
    assert db.scalar(select(func.count()).select_from(CitizenPlace)) == before


def test_address_without_geocoder_is_a_clear_422(client):
    response = client.post(
        "/v1/citizens", json=citizen_body(location={"address": "Seoul City Hall"})
    )
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "location.address"
    assert "ANJEON_GEOCODER=none" in error["message"]
