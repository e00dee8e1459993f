"""quiet_hours on the citizen: 22:00-07:00 unless given, null for none, left out of a PATCH to
keep it; a bad value is a 422 naming the field, and nothing is stored."""

import pytest
from sqlalchemy import func, select

from service.citizens.models import Citizen
from tests.builders import citizen_body, register

NIGHT = {"from": "22:00", "to": "07:00"}


def stored(db, public_id: str) -> tuple[str | None, str | None]:
    db.expire_all()
    citizen = db.scalar(select(Citizen).where(Citizen.public_id == public_id))
    return citizen.quiet_from, citizen.quiet_to


def test_left_out_on_registration_it_is_the_night(client, db):
    body = citizen_body()
    del body["quiet_hours"]
    response = client.post("/v1/citizens", json=body)
    assert response.status_code == 201, response.text
    data = response.json()
    headers = {"Authorization": f"Bearer {data['manage_token']}"}
    assert client.get(f"/v1/citizens/{data['id']}", headers=headers).json()["quiet_hours"] == NIGHT
    assert stored(db, data["id"]) == ("22:00", "07:00")


def test_given_null_or_changed_by_patch(client, db):
    citizen, headers, _ = register(client, quiet_hours=None)
    assert client.get(f"/v1/citizens/{citizen}", headers=headers).json()["quiet_hours"] is None
    assert stored(db, citizen) == (None, None)

    lunch = {"from": "12:30", "to": "13:45"}
    patched = client.patch(f"/v1/citizens/{citizen}", json={"quiet_hours": lunch}, headers=headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["quiet_hours"] == lunch
    assert stored(db, citizen) == ("12:30", "13:45")

    # Left out: unchanged.
    renamed = client.patch(f"/v1/citizens/{citizen}", json={"language": "en"}, headers=headers)
    assert renamed.json()["quiet_hours"] == lunch

    cleared = client.patch(f"/v1/citizens/{citizen}", json={"quiet_hours": None}, headers=headers)
    assert cleared.json()["quiet_hours"] is None
    assert stored(db, citizen) == (None, None)


def test_registration_takes_a_window_of_its_own(client, db):
    citizen, headers, _ = register(client, quiet_hours={"from": "23:15", "to": "06:00"})
    read = client.get(f"/v1/citizens/{citizen}", headers=headers).json()
    assert read["quiet_hours"] == {"from": "23:15", "to": "06:00"}


BAD = [
    ({"from": "24:00", "to": "07:00"}, "quiet_hours.from"),
    ({"from": "7:00", "to": "07:00"}, "quiet_hours.from"),
    ({"from": "22:00", "to": "07:60"}, "quiet_hours.to"),
    ({"from": "22:00", "to": 700}, "quiet_hours.to"),
    ({"from": "22:00"}, "quiet_hours.to"),
    ({"from": "07:00", "to": "07:00"}, "quiet_hours.to"),  # empty: null says "none"
    ({"from": "22:00", "to": "07:00", "zone": "UTC"}, "quiet_hours.zone"),
    ("22:00-07:00", "quiet_hours"),
]


@pytest.mark.parametrize(("value", "field"), BAD)
def test_a_bad_window_on_registration_is_422_naming_the_field(client, db, value, field):
    before = db.scalar(select(func.count()).select_from(Citizen))
    response = client.post("/v1/citizens", json=citizen_body(quiet_hours=value))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]
    assert db.scalar(select(func.count()).select_from(Citizen)) == before


@pytest.mark.parametrize(("value", "field"), BAD)
def test_a_bad_window_on_patch_is_422_and_changes_nothing(client, db, value, field):
    citizen, headers, _ = register(client, quiet_hours=NIGHT)
    response = client.patch(f"/v1/citizens/{citizen}", json={"quiet_hours": value}, headers=headers)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]
    assert stored(db, citizen) == ("22:00", "07:00")
