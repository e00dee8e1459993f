"""ANJEON_MAX_STAYS: at most that many stays per citizen (20 unless configured), on
registration and on change; one more is a 422 naming `stays` that stores nothing. Real app,
both backends."""

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from service.citizens.models import Citizen, CitizenPlace
from service.config import MAX_STAYS_CEILING, Settings
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
