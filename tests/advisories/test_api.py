"""Staff issue, read, revise, cancel and preview advisories; viewers only read."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from service.advisories.models import Advisory, AdvisoryRevision
from service.advisories.service import expire_due
from service.db import utcnow
from tests.advisories.builders import SQUARE, advisory_body, in_days
from tests.builders import register, stay


@pytest.fixture
def consul(staff_headers):
    return staff_headers("consul")


def test_issue_and_read(client, consul, staff_headers):
    response = client.post("/v1/advisories", json=advisory_body(), headers=consul)
    assert response.status_code == 201, response.text
    advisory = response.json()
    assert advisory["revision"] == 1 and advisory["status"] == "active"
    assert advisory["source"] == "manual" and advisory["level"] == 2
    assert advisory["issued_by"].startswith("consul-")
    viewer = staff_headers("viewer")
    fetched = client.get(f"/v1/advisories/{advisory['id']}", headers=viewer).json()
    assert fetched["title"]["ko"] == "도쿄 여행자제"
    assert fetched["area"]["geometry"]["type"] == "MultiPolygon"
    listed = client.get("/v1/advisories?status=active", headers=viewer).json()
    assert advisory["id"] in [a["id"] for a in listed["items"]]
    assert client.post("/v1/advisories", json=advisory_body(), headers=viewer).status_code == 403


def test_patch_makes_a_revision_and_keeps_the_old_one(client, consul):
    created = client.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    revised = client.patch(
        f"/v1/advisories/{created['id']}",
        json={"level": 3, "area": {"countries": ["jp"]}},
        headers=consul,
    )
    assert revised.status_code == 200, revised.text
    assert revised.json()["revision"] == 2 and revised.json()["level"] == 3
    assert revised.json()["area"]["countries"] == ["JP"]
    history = client.get(f"/v1/advisories/{created['id']}/revisions", headers=consul).json()
    # Levels as the advisory itself shows them: numbers (before, the snapshots said "2").
    assert [(h["revision"], h["content"]["level"]) for h in history] == [(1, 2), (2, 3)]
    assert history[0]["content"]["area"]["geometry"] is not None


def test_cancel(client, consul, db):
    created = client.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    cancelled = client.post(f"/v1/advisories/{created['id']}/cancel", headers=consul)
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["cancelled_at"]
    again = client.patch(f"/v1/advisories/{created['id']}", json={"level": 1}, headers=consul)
    assert again.status_code == 409


def test_expiry_job_expires_due_advisories(client, consul, db):
    created = client.post(
        "/v1/advisories", json=advisory_body(expires=in_days(1)), headers=consul
    ).json()
    assert expire_due(db, now=utcnow()) == 0
    assert expire_due(db, now=utcnow() + timedelta(days=2)) >= 1
    db.expire_all()
    assert (
        client.get(f"/v1/advisories/{created['id']}", headers=consul).json()["status"] == "expired"
    )


def test_preview_counts_by_channel_and_creates_nothing(client, consul, db):
    register(client, location={"lat": 35.5, "lon": 139.5}, channels=["sms"])
    register(client, location={"lat": 35.6, "lon": 139.6}, channels=["sms", "email"])
    register(
        client,
        location={"country": "KR"},
        stays=[stay(2, 5, lat=35.7, lon=139.7)],
        channels=["email"],
    )
    register(client, location={"lat": 37.5, "lon": 127.0})  # Seoul: outside
    before = db.scalar(select(func.count()).select_from(Advisory))
    response = client.post("/v1/advisories/preview", json=advisory_body(), headers=consul)
    assert response.status_code == 200, response.text
    preview = response.json()
    assert {k: preview[k] for k in ("citizens", "by_channel")} == {
        "citizens": 3,
        "by_channel": {"sms": 2, "email": 2},
    }
    assert db.scalar(select(func.count()).select_from(Advisory)) == before


def test_stay_outside_the_window_is_not_reached(client, consul):
    register(client, location={"country": "KR"}, stays=[stay(30, 5, lat=35.5, lon=139.5)])
    body = advisory_body(expires=in_days(10))
    assert client.post("/v1/advisories/preview", json=body, headers=consul).json()["citizens"] == 0


def test_matches_list_reached_citizens_masked(client, consul):
    register(client, location={"lat": 35.5, "lon": 139.5}, phone="010-4444-9876")
    created = client.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    page = client.get(f"/v1/advisories/{created['id']}/matches?limit=10", headers=consul).json()
    assert page["total"] == 1
    assert page["items"][0]["phone"] == "+82******9876" and page["items"][0]["place"] == "current"
    alerts = client.get(f"/v1/advisories/{created['id']}/alerts", headers=consul).json()
    # Enqueued at once, not yet sent (no dispatcher runs in this test), contacts masked.
    assert alerts["counts"] == {"pending": {"sms": 1, "email": 1}}
    assert alerts["total"] == 2
    by_channel = {item["channel"]: item for item in alerts["items"]}
    assert by_channel["sms"]["contact"] == "+82******9876"
    assert by_channel["sms"]["status"] == "pending" and by_channel["sms"]["attempts"] == 0


def test_revision_rows_are_kept(client, consul, db):
    created = client.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    client.patch(f"/v1/advisories/{created['id']}", json={"category": "health"}, headers=consul)
    count = db.scalar(select(func.count()).select_from(AdvisoryRevision))
    assert count >= 2
    assert SQUARE["type"] == "Polygon"


def test_subdivision_advisory_reaches_people_in_that_province(client, consul):
    register(client, location={"lat": 13.7563, "lon": 100.5018})  # Bangkok, TH-10
    register(client, location={"lat": 18.7883, "lon": 98.9853})  # Chiang Mai, TH-50
    body = advisory_body(area={"subdivisions": ["th-10"]})
    created = client.post("/v1/advisories", json=body, headers=consul)
    assert created.status_code == 201 and created.json()["area"]["subdivisions"] == ["TH-10"]
    preview = client.post("/v1/advisories/preview", json=body, headers=consul).json()
    assert preview["citizens"] == 1
    bad = client.post(
        "/v1/advisories", json=advisory_body(area={"subdivisions": ["TH-999"]}), headers=consul
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "area.subdivisions[0]"
