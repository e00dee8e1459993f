"""The geocoder's network call runs before a request's write transaction: while it hangs, other
requests write. Through the real request path (the app's own sessions on a file database)."""

import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.app import create_app
from service.geo.geocoding import GeocodedPoint
from tests.builders import citizen_body, register, stay
from tests.conftest import make_settings
from tests.dispatch.seed import scratch_database

WAIT_S = 30  # generous: only a broken service waits this long


class HeldGeocoder:
    """Answers Tokyo for any address, once the test lets it go."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()

    def geocode(self, address: str) -> GeocodedPoint | None:
        self.asked.set()
        self.release.wait(WAIT_S)
        return GeocodedPoint(lat=35.6895, lon=139.6917)


def open_transactions(app) -> int:
    """Other sessions of this database idle inside a transaction (PostgreSQL only)."""
    with app.state.engine.connect() as conn:
        return conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            )
        )


ADDRESS = {"address": "2-8-1 Nishi-Shinjuku, Tokyo"}


def _register(client, _id, _headers):
    return client.post("/v1/citizens", json=citizen_body(location=ADDRESS))


def _move(client, citizen_id, headers):
    return client.put(f"/v1/citizens/{citizen_id}/location", json=ADDRESS, headers=headers)


def _new_stays(client, citizen_id, headers):
    return client.patch(
        f"/v1/citizens/{citizen_id}", json={"stays": [stay(**ADDRESS)]}, headers=headers
    )


@pytest.mark.parametrize("request_with_address", [_register, _move, _new_stays])
def test_others_write_while_the_geocoder_hangs(database_url, tmp_path, request_with_address):
    geocoder = HeldGeocoder()
    with scratch_database(database_url, tmp_path, "geocoder") as url:
        app = create_app(make_settings(url), geocoder=geocoder)
        with TestClient(app, raise_server_exceptions=False) as client:
            citizen_id, headers, _ = register(client)
            answers = []
            pending = threading.Thread(
                target=lambda: answers.append(request_with_address(client, citizen_id, headers))
            )
            pending.start()
            try:
                reached = geocoder.asked.wait(WAIT_S)
                if app.state.engine.dialect.name == "postgresql":
                    assert open_transactions(app) == 0
                register(client)  # 201 while the geocoder still hangs, not 503 ten seconds on
                assert reached and pending.is_alive() and not answers
            finally:
                geocoder.release.set()  # a failing test must not leave the request hanging
                pending.join(WAIT_S)
            [answer] = answers
            assert answer.status_code in (200, 201), answer.text
            if request_with_address is _register:
                citizen_id = answer.json()["id"]
                headers = {"Authorization": f"Bearer {answer.json()['manage_token']}"}
            read = client.get(f"/v1/citizens/{citizen_id}", headers=headers).json()
        places = [read["location"], *read["stays"]]
        assert {"lat": 35.6895, "lon": 139.6917, "country": "JP", "source": "address"} in [
            {k: p[k] for k in ("lat", "lon", "country", "source")} for p in places
        ]
