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
import requests
from sqlalchemy import func, select

from service import provider_wire
from service.citizens.models import Citizen
from service.geo.geocoding import GeocodedPoint, GeocoderFailed, NominatimGeocoder
from service.provider_wire import BoundedAdapter, bounded
from tests.builders import citizen_body
from tests.conftest import bound_client
from tests.loopback_server import QuietHandler, loopback_http

TIMEOUT_S = 2.0
TRICKLE_S = 20.0  # how long the slow answer would go on: far past the bound
ANSWER = json.dumps(
    [{"lat": "13.7445", "lon": "100.5560", "display_name": "Sukhumvit Soi 11, Bangkok"}]
).encode()


class _Nominatim(QuietHandler):
    """Answers /search at once; an address with "slow" in it gets its body, and one with
    "headers" in it its headers, a byte every TIMEOUT_S / 4, so that no read waits as long as
    the client's timeout. Records each search and how each trickle ended."""

    protocol_version = "HTTP/1.1"  # kept alive, as Nominatim's connections are
    searches: ClassVar[list[str]]
    endings: ClassVar[list[str]]

    def do_GET(self) -> None:
        if not self.path.startswith("/search"):
            self.reply(404)
            return
        self.searches.append(self.path)
        if "slow" not in self.path and "headers" not in self.path:
            self.reply(200, ANSWER, [("Content-Type", "application/json")])
            return
        if "headers" in self.path:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            trickle = b"X-Padding: " + b"a" * 1000
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(ANSWER)))
            self.end_headers()
            trickle = ANSWER
        step_s = TIMEOUT_S / 4
        try:
            for i in range(int(TRICKLE_S / step_s)):  # fewer bytes than `trickle` holds
                self.wfile.write(trickle[i : i + 1])
                self.wfile.flush()
                time.sleep(step_s)
        except OSError:
            self.endings.append("cut by the client")
            return
        self.endings.append("trickled to the end")


@pytest.fixture
def nominatim() -> Iterator[type[_Nominatim]]:
    # A class of its own for each test: a trickle still ending from the test before cannot
    # write into this one's lists.
    handler = type("Nominatim", (_Nominatim,), {"searches": [], "endings": []})
    with loopback_http(handler) as url:
        handler.url = url  # type: ignore[attr-defined]
        yield handler


def _ended(handler: type[_Nominatim]) -> list[str]:
    deadline = time.monotonic() + 5
    while not handler.endings and time.monotonic() < deadline:
        time.sleep(0.05)
    return handler.endings


def _geocoder(url: str) -> NominatimGeocoder:
    return NominatimGeocoder(
        user_agent="anjeon-tests", timeout_s=TIMEOUT_S, url=url, turn=lambda: 0.0
    )


def test_an_address_is_geocoded_over_http(nominatim):
    point = _geocoder(nominatim.url).geocode("Sukhumvit Soi 11, Bangkok")
    assert point == GeocodedPoint(lat=13.7445, lon=100.556)


def test_a_connection_back_in_its_pool_is_no_longer_watched(nominatim):
    """Its exchange is over: watched on to the bound's end, it could be cut under the next
    thread that takes it from the pool."""
    session = requests.Session()
    session.mount("http://", BoundedAdapter())
    with bounded(60):
        assert session.get(f"{nominatim.url}/search?q=x", timeout=TIMEOUT_S).status_code == 200
        assert provider_wire._bound.get().watched == {}
    session.close()


@pytest.mark.parametrize("address", ["slow street 1, Bangkok", "headers street 1, Bangkok"])
def test_a_trickling_answer_is_cut_at_twice_the_timeout_and_not_asked_again(nominatim, address):
    started = time.monotonic()
    with pytest.raises(GeocoderFailed):
        _geocoder(nominatim.url).geocode(address)
    took = time.monotonic() - started
    # Without the bound the look-up reads on to the trickle's end (TRICKLE_S).
    assert 2 * TIMEOUT_S <= took < TRICKLE_S / 2, took
    assert _ended(nominatim) == ["cut by the client"]
    # A cut answer is not asked for again (geopy's retries, outside the one-a-second turns).
    assert len(nominatim.searches) == 1, nominatim.searches


def test_a_registration_whose_address_trickles_is_a_503_that_stores_nothing(
    settings, db, nominatim
):
    before = db.scalar(select(func.count()).select_from(Citizen))
    answers: list = []
    with bound_client(settings, db, geocoder=_geocoder(nominatim.url)) as client:
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
