"""ANJEON_MAX_STAYS: at most that many stays per citizen (20 unless configured), on
registration and on change; one more is a 422 naming `stays` that stores nothing. Real app,
both backends."""

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from service.citizens.models import Citizen, CitizenPlace
from service.config import MAX_STAYS_CEILING, Settings
from service.geo.geocoding import GeocodedPoint
from tests.builders import citizen_body, register, stay
from tests.conftest import bound_client, make_settings


def stays(n: int) -> list[dict]:
    return [stay(days_from_now=1 + i, length=1) for i in range(n)]


def places(db) -> tuple[int, int]:
    return (
        db.scalar(select(func.count()).select_from(Citizen)),
        db.scalar(select(func.count()).select_from(CitizenPlace)),
    )


def refused_for_stays(response, limit: int) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["field"] == "stays"
    assert str(limit) in error["message"]


def test_the_shipped_limit_is_20_on_register_and_change(client, db):
    assert Settings.model_fields["max_stays"].default == 20
    citizen_id, manage, _ = register(client, stays=stays(20))
    before = places(db)
    refused_for_stays(client.post("/v1/citizens", json=citizen_body(stays=stays(21))), 20)
    refused_for_stays(
        client.patch(f"/v1/citizens/{citizen_id}", json={"stays": stays(21)}, headers=manage), 20
    )
    assert places(db) == before
    record = client.get(f"/v1/citizens/{citizen_id}", headers=manage).json()
    assert len(record["stays"]) == 20


@pytest.mark.parametrize("limit", [1, 3, MAX_STAYS_CEILING])
def test_the_setting_moves_the_limit(database_url, db, limit):
    with bound_client(make_settings(database_url, max_stays=limit), db) as client:
        citizen_id, manage, _ = register(client, stays=stays(limit))
        before = places(db)
        refused_for_stays(
            client.post("/v1/citizens", json=citizen_body(stays=stays(limit + 1))), limit
        )
        changed = client.patch(
            f"/v1/citizens/{citizen_id}", json={"stays": stays(limit + 1)}, headers=manage
        )
        refused_for_stays(changed, limit)
        assert places(db) == before
        fewer = client.patch(f"/v1/citizens/{citizen_id}", json={"stays": []}, headers=manage)
        assert fewer.status_code == 200 and fewer.json()["stays"] == []


def test_an_address_is_not_geocoded_when_there_are_too_many_stays(database_url, db):
    asked: list[str] = []

    class Recording:
        def geocode(self, address: str):
            asked.append(address)
            return None

    settings = make_settings(database_url, max_stays=2)
    with bound_client(settings, db, geocoder=Recording()) as client:
        body = citizen_body(stays=[stay(1, 1, address="Sukhumvit Soi 11, Bangkok")] * 3)
        refused_for_stays(client.post("/v1/citizens", json=body), 2)
    assert asked == []


def test_at_most_five_places_by_address_in_one_request(database_url, db):
    """The geocoder answers one address a second: twenty in one request passed its deadline
    and were never stored, and held the geocoder from everyone else (probe finding). A sixth
    address is refused before any is looked up; five are stored."""
    asked: list[str] = []

    class Bangkok:
        def geocode(self, address: str) -> GeocodedPoint:
            asked.append(address)
            return GeocodedPoint(lat=13.74, lon=100.55)

    by_address = [stay(1 + i, 1, address=f"Sukhumvit Soi {i}, Bangkok") for i in range(6)]
    with bound_client(make_settings(database_url), db, geocoder=Bangkok()) as client:
        citizen_id, manage, _ = register(client)
        record = f"/v1/citizens/{citizen_id}"
        for body in (citizen_body(stays=by_address), {"stays": by_address}):
            before = places(db)
            send = client.post if "name" in body else client.patch
            sent = send("/v1/citizens" if "name" in body else record, json=body, headers=manage)
            assert sent.status_code == 422, sent.text
            assert [e["field"] for e in sent.json()["errors"]] == ["stays"]
            assert "at most 5 places by address" in sent.json()["detail"]
            assert places(db) == before and asked == []
        five = client.patch(record, json={"stays": by_address[:5]}, headers=manage)
        assert five.status_code == 200, five.text
        assert len(five.json()["stays"]) == 5 and len(asked) == 5


def test_the_setting_is_bounded_and_read_from_the_environment(monkeypatch):
    for wrong in (0, MAX_STAYS_CEILING + 1):
        with pytest.raises(ValidationError, match="max_stays"):
            Settings(max_stays=wrong)
    monkeypatch.setenv("ANJEON_MAX_STAYS", "5")
    assert Settings().max_stays == 5


def test_the_schema_says_where_the_limit_comes_from(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]["CitizenCreate"]
    described = schema["properties"]["stays"]
    assert described["maxItems"] == MAX_STAYS_CEILING
    assert "ANJEON_MAX_STAYS" in described["description"]
