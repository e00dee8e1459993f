"""Nominatim takes one request a second from the whole service. An address that cannot have a
turn soon is refused at once with a 503 (geopy's RateLimiter queued every caller asleep on a
worker thread: forty requests with an address, which anyone may send, held the API's whole
thread pool), and a request with a wrong manage token geocodes nothing."""

import threading
import time

import pytest
from sqlalchemy import func, select

from service.citizens.models import Citizen, CitizenPlace
from service.config import Settings
from service.db import REQUEST_DEADLINE, Deadline
from service.geo.geocoding import GeocodedPoint, GeocoderBusy, NominatimGeocoder, OneTurnAtATime
from service.rate_limits import RateLimits
from tests.builders import citizen_body, register, stay
from tests.citizens.test_register import CannedNominatim
from tests.conftest import bound_client

ADDRESS = {"address": "Sukhumvit Soi 11, Bangkok"}
WAIT_S = 30  # generous: only a broken geocoder waits this long


def _geocoder(turn, **options) -> NominatimGeocoder:
    return NominatimGeocoder(
        user_agent="anjeon-tests",
        timeout_s=1,
        adapter_factory=CannedNominatim,
        turn=turn,
        **options,
    )


def test_an_address_that_would_wait_past_the_limit_is_refused_at_once_without_a_request():
    asked = len(CannedNominatim.requested)
    geocoder = _geocoder(lambda: 30.0)  # the next turn is 30 s away: past MAX_WAIT_S
    with pytest.raises(GeocoderBusy) as busy:
        geocoder.geocode(ADDRESS["address"])
    assert busy.value.retry_after_s == 30
    assert len(CannedNominatim.requested) == asked


def test_past_max_waiting_an_address_is_refused_while_the_others_wait_their_turn():
    entered, release = threading.Semaphore(0), threading.Event()

    def turn() -> float:
        entered.release()
        release.wait(WAIT_S)  # as if asleep until its turn
        return 0.0

    geocoder = _geocoder(turn, max_waiting=2)
    found: list[GeocodedPoint | None] = []
    waiting = [
        threading.Thread(target=lambda: found.append(geocoder.geocode(ADDRESS["address"])))
        for _ in range(2)
    ]
    for thread in waiting:
        thread.start()
    try:
        assert entered.acquire(timeout=WAIT_S) and entered.acquire(timeout=WAIT_S)
        with pytest.raises(GeocoderBusy):
            geocoder.geocode(ADDRESS["address"])  # the third: refused, not queued
    finally:
        release.set()
        for thread in waiting:
            thread.join(WAIT_S)
    assert found == [GeocodedPoint(13.7445, 100.556)] * 2
    # The waiters done, an address may wait again.
    assert geocoder.geocode(ADDRESS["address"]) == GeocodedPoint(13.7445, 100.556)


def _turns(*waits: float) -> tuple[list[float], object]:
    """A turn answering `waits` in order (then 0), and the list of what it answered."""
    answered: list[float] = []
    left = list(waits)

    def turn() -> float:
        answered.append(left.pop(0) if left else 0.0)
        return answered[-1]

    return answered, turn


def _within_request(seconds_left: float, geocoder: NominatimGeocoder) -> GeocodedPoint | None:
    token = REQUEST_DEADLINE.set(Deadline(time.monotonic() + seconds_left))
    try:
        return geocoder.geocode(ADDRESS["address"])
    finally:
        REQUEST_DEADLINE.reset(token)


def test_a_turn_too_late_for_the_request_s_deadline_is_refused_at_once():
    # The same turn, 1 s away: outside a request the address waits for it; in a request with
    # 1.5 s left and a look-up timeout of 1 s, the answer could not come in time.
    asked = len(CannedNominatim.requested)
    answered, turn = _turns(1.0)
    assert _geocoder(turn).geocode(ADDRESS["address"]) == GeocodedPoint(13.7445, 100.556)
    assert answered == [1.0, 0.0] and len(CannedNominatim.requested) == asked + 1

    answered, turn = _turns(1.0)
    with pytest.raises(GeocoderBusy):
        _within_request(1.5, _geocoder(turn))
    assert answered == [1.0]
    assert len(CannedNominatim.requested) == asked + 1


def test_a_request_with_too_little_time_left_takes_no_turn():
    answered, turn = _turns()
    with pytest.raises(GeocoderBusy):
        _within_request(0.5, _geocoder(turn))  # less than the look-up's timeout (1 s) left
    assert answered == []  # no turn taken from the others
    assert _within_request(30, _geocoder(turn)) == GeocodedPoint(13.7445, 100.556)
    assert answered == [0.0]


def test_a_look_up_as_long_as_a_request_is_refused_at_start():
    """No turn could leave such a look-up its timeout before the request's deadline."""
    with pytest.raises(ValueError, match="ANJEON_GEOCODER_TIMEOUT_S must be shorter"):
        Settings(
            secret_key="x" * 40,
            geocoder="nominatim",
            geocoder_user_agent="anjeon-tests",
            geocoder_timeout_s=15,
            request_timeout_s=15,
        )
    with pytest.raises(ValueError, match="ANJEON_DATABASE_POOL_TIMEOUT_S must be shorter"):
        Settings(secret_key="x" * 40, database_pool_timeout_s=20, request_timeout_s=15)
    # Without a geocoder its timeout does not matter.
    assert Settings(secret_key="x" * 40, geocoder_timeout_s=15, request_timeout_s=15)


def test_one_process_gives_one_turn_a_second():
    turn = OneTurnAtATime(interval_s=60)
    assert turn() == 0.0
    assert 59 < turn() <= 60


def test_a_busy_geocoder_is_a_503_with_retry_after_and_stores_nothing(settings, db):
    before = db.scalar(select(func.count()).select_from(Citizen))
    with bound_client(settings, db, geocoder=_geocoder(lambda: 30.0)) as client:
        refused = client.post("/v1/citizens", json=citizen_body(location=ADDRESS))
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "30"
    assert "give a country code, or lat and lon" in refused.json()["detail"]
    assert db.scalar(select(func.count()).select_from(Citizen)) == before


def test_a_wrong_manage_token_geocodes_nothing(settings, db):
    with bound_client(settings, db, geocoder=_geocoder(lambda: 0.0)) as client:
        citizen_id, headers, _ = register(client)
        wrong = {"Authorization": "Bearer ajc_not-the-token"}
        asked = len(CannedNominatim.requested)
        moved = client.put(f"/v1/citizens/{citizen_id}/location", json=ADDRESS, headers=wrong)
        changed = client.patch(
            f"/v1/citizens/{citizen_id}", json={"stays": [stay(**ADDRESS)]}, headers=wrong
        )
        assert (moved.status_code, changed.status_code) == (404, 404)
        assert len(CannedNominatim.requested) == asked
        places = db.scalar(select(func.count()).select_from(CitizenPlace))
        # The owner's own request is geocoded and stored.
        owned = client.patch(
            f"/v1/citizens/{citizen_id}", json={"stays": [stay(**ADDRESS)]}, headers=headers
        )
        assert owned.status_code == 200, owned.text
        assert len(CannedNominatim.requested) == asked + 1
        assert db.scalar(select(func.count()).select_from(CitizenPlace)) == places + 1


@pytest.mark.parametrize(
    "wrong",
    [
        {"location": {"country": "XX"}},
        {"phone": "12345"},
        {"stays": [stay(-10, 3)]},
        {"stays": [stay(1, 3, country="QQ")]},
    ],
    ids=["bad country", "bad phone", "ended stay", "bad stay country"],
)
def test_a_request_refused_for_anything_else_sends_no_address_to_the_geocoder(settings, db, wrong):
    """Its addresses would be geocoded again once the citizen fixed the rest: none is sent,
    and no turn spent, until nothing else is wrong."""
    addresses = [stay(1, 3, **ADDRESS) for _ in range(4)]
    body = citizen_body(**{**wrong, "stays": wrong.get("stays", []) + addresses})
    with bound_client(settings, db, geocoder=_geocoder(lambda: 0.0)) as client:
        asked = len(CannedNominatim.requested)
        refused = client.post("/v1/citizens", json=body)
        assert refused.status_code == 422, refused.text
        assert len(CannedNominatim.requested) == asked
        # Put right, the same addresses are geocoded.
        right = citizen_body(stays=addresses)
        assert client.post("/v1/citizens", json=right).status_code == 201
        assert len(CannedNominatim.requested) == asked + 4


def test_one_record_makes_only_so_many_changes_by_address(settings, db):
    """The turns are the whole service's: one manage token (anyone may register one) cannot
    take them as it likes. A change without an address is not counted, nor is one refused
    as bad input (a probe's ten 422s for a bad phone number spent the hour's changes)."""
    limited = settings.model_copy(update={"rate_limit_geocode": "2/hour"})
    with bound_client(limited, db, geocoder=_geocoder(lambda: 0.0)) as client:
        citizen_id, headers, _ = register(client)
        url = f"/v1/citizens/{citizen_id}"
        by_address = {"stays": [stay(1, 3, **ADDRESS)]}
        for _ in range(3):
            bad = client.patch(url, json={**by_address, "phone": "12"}, headers=headers)
            assert bad.status_code == 422, bad.text
            bad = client.put(f"{url}/location", json={**ADDRESS, "lat": 1.0}, headers=headers)
            assert bad.status_code == 422, bad.text
        assert client.patch(url, json=by_address, headers=headers).status_code == 200
        assert client.put(f"{url}/location", json=ADDRESS, headers=headers).status_code == 200
        asked = len(CannedNominatim.requested)
        refused = client.put(f"{url}/location", json=ADDRESS, headers=headers)
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"]
        assert "give a country code, or lat and lon" in refused.json()["detail"]
        assert client.patch(url, json=by_address, headers=headers).status_code == 429
        assert len(CannedNominatim.requested) == asked
        by_country = {"stays": [stay(1, 3, country="TH")]}
        assert client.patch(url, json=by_country, headers=headers).status_code == 200
        moved = client.put(f"{url}/location", json={"country": "JP"}, headers=headers)
        assert moved.status_code == 200


def test_one_client_address_takes_only_its_share_of_the_turns(settings, db):
    """Found by a probe: 20 records from one address, each changing its stays by address in a
    loop, took every turn of the service, and everyone else's addresses got 503s. A client
    address has its share, a hit per look-up (registrations and changes together); by country
    or point is not counted, nor is a request refused as bad input, and a registration the
    share refuses does not count against the address's registrations."""
    limited = settings.model_copy(
        update={"rate_limit_geocode_client": "4/hour", "rate_limit_client": "4/hour"}
    )
    with bound_client(limited, db, geocoder=_geocoder(lambda: 0.0)) as client:
        citizen_id, auth, _ = register(client)  # by lat and lon: no share spent
        two = {"stays": [stay(1, 3, **ADDRESS), stay(5, 7, **ADDRESS)]}
        bad = client.patch(f"/v1/citizens/{citizen_id}", json={**two, "phone": "12"}, headers=auth)
        assert bad.status_code == 422
        changed = client.patch(f"/v1/citizens/{citizen_id}", json=two, headers=auth)
        assert changed.status_code == 200, changed.text
        assert client.post("/v1/citizens", json=citizen_body(location=ADDRESS)).status_code == 201
        asked = len(CannedNominatim.requested)
        # Three look-ups taken of four: two more do not fit.
        refused = client.patch(f"/v1/citizens/{citizen_id}", json=two, headers=auth)
        assert refused.status_code == 429, refused.text
        assert "from this network: give a country code, or lat and lon" in refused.json()["detail"]
        for _ in range(2):  # refused by the share: not counted as registrations
            registering = citizen_body(stays=[stay(1, 3, **ADDRESS), stay(5, 7, **ADDRESS)])
            assert client.post("/v1/citizens", json=registering).status_code == 429
        assert len(CannedNominatim.requested) == asked
        moved = client.put(f"/v1/citizens/{citizen_id}/location", json=ADDRESS, headers=auth)
        assert moved.status_code == 200, moved.text  # the fourth look-up
        by_country = client.post("/v1/citizens", json=citizen_body(location={"country": "JP"}))
        assert by_country.status_code == 201  # the address's third registration of four


def test_a_busy_geocoder_gives_back_the_look_ups_it_did_not_make(settings, db):
    """The share counts look-ups made: those a busy geocoder turned away (a 503) go back, and
    so does the record's change by address when none was made."""
    limited = settings.model_copy(
        update={"rate_limit_geocode_client": "2/hour", "rate_limit_geocode": "1/hour"}
    )
    with bound_client(limited, db, geocoder=_geocoder(lambda: 60.0)) as busy:
        citizen_id, auth, _ = register(busy)
        for _ in range(3):
            moved = busy.put(f"/v1/citizens/{citizen_id}/location", json=ADDRESS, headers=auth)
            assert moved.status_code == 503, moved.text
    with bound_client(limited, db, geocoder=_geocoder(lambda: 0.0)) as free:
        moved = free.put(f"/v1/citizens/{citizen_id}/location", json=ADDRESS, headers=auth)
        assert moved.status_code == 200, moved.text


def test_a_nominatim_of_ones_own_is_asked_at_its_own_rate():
    """OpenStreetMap's public Nominatim takes one request a second; an operator running their
    own names it and its rate."""
    with pytest.raises(ValueError, match="ANJEON_GEOCODER_URL"):
        Settings(secret_key="x" * 40, geocoder_per_second=5)
    with pytest.raises(ValueError, match="scheme and host"):
        Settings(secret_key="x" * 40, geocoder_url="nominatim.example.org/search")
    own = Settings(
        secret_key="x" * 40,
        geocoder_url="https://nominatim.example.org",
        geocoder_per_second=5,
        rate_limit_storage="memory://",
    )
    turns = RateLimits(own, namespace="geocoder-own")
    assert [turns.geocoder_turn() for _ in range(6)][:5] == [0.0] * 5
    assert turns.geocoder_turn() > 0  # the sixth in that second waits
    geocoder = NominatimGeocoder(
        user_agent="anjeon-tests",
        timeout_s=1,
        adapter_factory=CannedNominatim,
        turn=lambda: 0.0,
        url=own.geocoder_url,
    )
    assert geocoder.geocode(ADDRESS["address"]) == GeocodedPoint(13.7445, 100.556)
    assert CannedNominatim.requested[-1].startswith("https://nominatim.example.org/search")


def test_a_busy_geocoder_gives_the_address_its_registration_back(settings, db):
    """A citizen behind a busy geocoder retries; their 503s cost no registration of their
    address's limit (a carrier's NAT puts many behind one), which then holds as set."""
    limited = settings.model_copy(update={"rate_limit_client": "2/hour"})
    wait = [30.0]
    with bound_client(limited, db, geocoder=_geocoder(lambda: wait[0])) as client:
        asked = len(CannedNominatim.requested)
        for _ in range(3):
            busy = client.post("/v1/citizens", json=citizen_body(location=ADDRESS))
            assert busy.status_code == 503, busy.text
        assert len(CannedNominatim.requested) == asked
        wait[0] = 0.0
        for _ in range(2):
            assert (
                client.post("/v1/citizens", json=citizen_body(location=ADDRESS)).status_code == 201
            )
        refused = client.post("/v1/citizens", json=citizen_body(location=ADDRESS))
        assert refused.status_code == 429, refused.text
        assert len(CannedNominatim.requested) == asked + 2


def test_a_busy_geocoder_after_a_look_up_keeps_the_registration_counted(settings, db):
    """Its first address was looked up (a turn of the whole service's spent), its second
    found no turn: given back, the same request could take turns for free again and again."""
    limited = settings.model_copy(update={"rate_limit_client": "1/hour"})
    _, turn = _turns(0.0, 30.0)
    with bound_client(limited, db, geocoder=_geocoder(turn)) as client:
        asked = len(CannedNominatim.requested)
        body = citizen_body(location=ADDRESS, stays=[stay(1, 3, **ADDRESS)])
        busy = client.post("/v1/citizens", json=body)
        assert busy.status_code == 503, busy.text
        assert len(CannedNominatim.requested) == asked + 1
        refused = client.post("/v1/citizens", json=citizen_body())
        assert refused.status_code == 429, refused.text


def test_a_turn_taken_too_late_to_use_is_refused_as_spent():
    """Taking the turn (a Redis round trip) ran into the look-up's time: refused, and said to
    have spent a turn, so a registration refused for it keeps its count (review finding)."""

    def slow_turn() -> float:
        time.sleep(0.7)  # past the turn's latest moment: 1.5 s left less the 1 s look-up
        return 0.0

    asked = len(CannedNominatim.requested)
    with pytest.raises(GeocoderBusy) as busy:
        _within_request(1.5, _geocoder(slow_turn))
    assert busy.value.turn_taken
    assert len(CannedNominatim.requested) == asked
    with pytest.raises(GeocoderBusy) as busy:
        _within_request(1.5, _geocoder(lambda: 30.0))
    assert not busy.value.turn_taken
