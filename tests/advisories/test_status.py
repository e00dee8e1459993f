"""An advisory past its end reads as expired at once, in the ?status= filter and in the status
field alike, before the minute job has written it down."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from service.advisories.models import Advisory
from service.db import utcnow
from tests.advisories.builders import advisory_body
from tests.builders import register


@pytest.fixture
def consul(staff_headers):
    return staff_headers("consul")


@pytest.fixture
def ended(client, consul, db):
    """An advisory whose end passed a minute ago; the expiry job has not run."""
    register(client, location={"lat": 35.5, "lon": 139.5})
    created = client.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    advisory = db.scalar(select(Advisory).where(Advisory.public_id == created["id"]))
    advisory.effective = utcnow() - timedelta(days=2)
    advisory.expires = utcnow() - timedelta(minutes=1)
    db.flush()
    return created["id"]


def _listed(client, consul, status=None):
    query = {"limit": 500} if status is None else {"limit": 500, "status": status}
    page = client.get("/v1/advisories", params=query, headers=consul).json()
    return {a["id"]: a["status"] for a in page["items"]}, page["total"]


def test_an_ended_advisory_reads_as_expired_everywhere(client, consul, db, ended):
    still_open = client.post("/v1/advisories", json=advisory_body(), headers=consul).json()["id"]
    assert db.scalar(select(Advisory.status).where(Advisory.public_id == ended)) == "active"

    assert client.get(f"/v1/advisories/{ended}", headers=consul).json()["status"] == "expired"
    active, active_total = _listed(client, consul, "active")
    expired, expired_total = _listed(client, consul, "expired")
    assert ended not in active and active[still_open] == "active"
    assert expired[ended] == "expired" and still_open not in expired
    assert (active_total, expired_total) == (len(active), len(expired))
    everything, _ = _listed(client, consul)
    assert everything[ended] == "expired" and everything[still_open] == "active"


def test_an_ended_advisory_cannot_be_revised_and_reaches_nobody(client, consul, ended):
    revised = client.patch(
        f"/v1/advisories/{ended}", json={"expires": advisory_body()["expires"]}, headers=consul
    )
    assert revised.status_code == 409 and "expired" in revised.json()["detail"]
    matches = client.get(f"/v1/advisories/{ended}/matches", headers=consul).json()
    assert matches["total"] == 0 and matches["items"] == []


def test_an_advisory_without_an_end_stays_active(client, consul):
    created = client.post("/v1/advisories", json=advisory_body(expires=None), headers=consul).json()
    active, _ = _listed(client, consul, "active")
    assert active[created["id"]] == "active"
