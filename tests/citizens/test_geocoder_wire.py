"""The geocoder over real HTTP on loopback, through geopy and requests as deployed: a look-up
ends within twice its timeout however slowly Nominatim's answer trickles in. geopy's timeout
bounds each read alone: a byte a second never trips it, and held a registration's thread (and,
forty at once, the API's whole pool) for as long as the trickle went on."""

import json
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest
from sqlalchemy import func, select

from service.citizens.models import Citizen
from service.geo.geocoding import GeocodedPoint, GeocoderFailed, NominatimGeocoder
from tests.builders import citizen_body
from tests.conftest import bound_client
from tests.loopback_server import QuietHandler, loopback_http

TIMEOUT_S = 1.0
TRICKLE_S = 20.0  # how long the slow answer would take in all: far past the bound
ANSWER = json.dumps(
    [{"lat": "13.7445", "lon": "100.5560", "display_name": "Sukhumvit Soi 11, Bangkok"}]
).encode()


class _Nominatim(QuietHandler):
    """Answers /search at once, or (an address with "slow" in it) a byte every TIMEOUT_S / 4,
    so that no read waits as long as the client's timeout. Records how each answer ended."""

    endings: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        if not self.path.startswith("/search"):
            self.reply(404)
            return
        if "slow" not in self.path:
            self.reply(200, ANSWER, [("Content-Type", "application/json")])
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        step_s = TIMEOUT_S / 4
        try:
            for i in range(int(TRICKLE_S / step_s)):
                self.wfile.write(ANSWER[i : i + 1] if i < len(ANSWER) - 1 else b" ")
                self.wfile.flush()
                time.sleep(step_s)
        except OSError:
            self.endings.append("cut by the client")
            return
        self.endings.append("trickled to the end")


@pytest.fixture
def nominatim() -> Iterator[str]:
    _Nominatim.endings = []
    with loopback_http(_Nominatim) as url:
        yield url


def _geocoder(url: str) -> NominatimGeocoder:
    return NominatimGeocoder(
        user_agent="anjeon-tests", timeout_s=TIMEOUT_S, url=url, turn=lambda: 0.0
    )


def test_an_address_is_geocoded_over_http(nominatim):
    point = _geocoder(nominatim).geocode("Sukhumvit Soi 11, Bangkok")
    assert point == GeocodedPoint(lat=13.7445, lon=100.556)


def test_a_trickling_answer_is_cut_at_twice_the_timeout(nominatim):
    started = time.monotonic()
    with pytest.raises(GeocoderFailed):
        _geocoder(nominatim).geocode("slow street 1, Bangkok")
    took = time.monotonic() - started
    # Without the bound the look-up reads to the trickle's end (TRICKLE_S).
    assert 2 * TIMEOUT_S <= took < TRICKLE_S / 2, took
    deadline = time.monotonic() + 5
    while not _Nominatim.endings and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _Nominatim.endings == ["cut by the client"]


def test_a_registration_whose_address_trickles_is_a_503_that_stores_nothing(
    settings, db, nominatim
):
    before = db.scalar(select(func.count()).select_from(Citizen))
    answers: list = []
    with bound_client(settings, db, geocoder=_geocoder(nominatim)) as client:
        body = citizen_body(location={"address": "slow street 2, Bangkok"})
        # In a thread of its own: a failure here must not hang the test for the trickle.
        thread = threading.Thread(
            target=lambda: answers.append(client.post("/v1/citizens", json=body))
        )
        started = time.monotonic()
        thread.start()
        thread.join(TRICKLE_S / 2)
        took = time.monotonic() - started
    assert answers, f"no answer in {took:.1f} s"
    assert answers[0].status_code == 503, answers[0].text
    assert "geocoding service failed" in answers[0].json()["detail"]
    assert db.scalar(select(func.count()).select_from(Citizen)) == before
