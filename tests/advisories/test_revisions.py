"""PATCH /v1/advisories/{id}: a revision that changes nothing creates nothing and alerts nobody
again; null where a value is needed is a 422 naming the field; expires: null removes the end."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from service.advisories.models import Advisory, AdvisoryRevision
from tests.advisories.builders import advisory_body, in_days
from tests.builders import register


@pytest.fixture
def consul(staff_headers):
    return staff_headers("consul")


@pytest.fixture
def issued(client, consul):
    """An advisory reaching one citizen (an SMS and an e-mail enqueued)."""
    register(client, location={"lat": 35.5, "lon": 139.5})
    response = client.post("/v1/advisories", json=advisory_body(), headers=consul)
    assert response.status_code == 201, response.text
    return response.json()


def _enqueued(client, consul, advisory_id) -> int:
    counts = client.get(f"/v1/advisories/{advisory_id}/alerts", headers=consul).json()["counts"]
    return sum(n for by_channel in counts.values() for n in by_channel.values())


def _revisions(db, advisory_id) -> list[int]:
    return list(
        db.scalars(
            select(AdvisoryRevision.revision)
            .join(Advisory, Advisory.id == AdvisoryRevision.advisory_id)
            .where(Advisory.public_id == advisory_id)
            .order_by(AdvisoryRevision.revision)
        )
    )


def _same_values(advisory):
    """Every field as issued; the times written in another offset (the same instants)."""
    kst = timezone(timedelta(hours=9))

    def elsewhere(stamp):
        return datetime.fromisoformat(stamp).astimezone(kst).isoformat()

    body = advisory_body()
    return {
        "title": body["title"],
        "message": body["message"],
        "level": body["level"],
        "category": body["category"],
        "area": body["area"],
        "effective": elsewhere(advisory["effective"]),
        "expires": elsewhere(advisory["expires"]),
    }


@pytest.mark.parametrize("patch", [lambda advisory: {}, _same_values], ids=["empty", "same"])
def test_a_patch_that_changes_nothing_makes_no_revision_and_alerts_nobody(
    client, consul, db, issued, patch
):
    assert _enqueued(client, consul, issued["id"]) == 2
    for _ in range(2):  # the probe in the issue sent two: each re-alerted everyone
        answer = client.patch(f"/v1/advisories/{issued['id']}", json=patch(issued), headers=consul)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {**issued, "status": "active"}
    assert _revisions(db, issued["id"]) == [1]
    assert _enqueued(client, consul, issued["id"]) == 2


def test_a_patch_that_changes_something_is_a_revision_that_alerts_again(client, consul, db, issued):
    answer = client.patch(
        f"/v1/advisories/{issued['id']}", json={**_same_values(issued), "level": 3}, headers=consul
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["revision"] == 2 and answer.json()["level"] == 3
    assert _revisions(db, issued["id"]) == [1, 2]
    assert _enqueued(client, consul, issued["id"]) == 4


@pytest.mark.parametrize("field", ["area", "title", "message", "category", "effective", "level"])
def test_null_for_a_needed_field_is_a_422_naming_it(client, consul, db, issued, field):
    answer = client.patch(f"/v1/advisories/{issued['id']}", json={field: None}, headers=consul)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in answer.json()["errors"]] == [field]
    assert "null" in answer.json()["errors"][0]["message"]
    assert _revisions(db, issued["id"]) == [1]
    assert client.get(f"/v1/advisories/{issued['id']}", headers=consul).json() == issued


def test_expires_null_removes_the_end(client, consul, issued):
    answer = client.patch(f"/v1/advisories/{issued['id']}", json={"expires": None}, headers=consul)
    assert answer.status_code == 200, answer.text
    assert answer.json()["expires"] is None and answer.json()["revision"] == 2


def test_a_special_advisory_keeps_its_end(client, consul):
    body = advisory_body(level="special", expires=in_days(30))
    special = client.post("/v1/advisories", json=body, headers=consul).json()
    answer = client.patch(f"/v1/advisories/{special['id']}", json={"expires": None}, headers=consul)
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == ["expires"]


def test_an_empty_patch_of_a_cancelled_advisory_is_a_conflict(client, consul, issued):
    client.post(f"/v1/advisories/{issued['id']}/cancel", headers=consul)
    answer = client.patch(f"/v1/advisories/{issued['id']}", json={}, headers=consul)
    assert answer.status_code == 409
