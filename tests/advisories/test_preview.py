"""The preview staff decide on: reach by channel, language and country of the matched place, and
the SMS the send would cost, held to what the dispatcher then really sends (fake Twilio)."""

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from shapely.geometry import MultiPolygon, Polygon
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.advisories import preview as previews
from service.advisories.models import Advisory
from service.advisories.preview import area_summary
from service.app import create_app
from service.audit.models import AuditEntry
from service.config import Settings
from service.dispatch import sms_text
from service.geo.areas import Area
from service.ledger.models import Alert
from service.staff import service as staff_service
from tests.advisories.builders import advisory_body, in_days
from tests.builders import register, stay
from tests.conftest import bound_client, make_settings
from tests.dispatch import conftest as dispatch_fixtures
from tests.dispatch.seed import scratch_database
from tests.loopback_server import listening_socket, uvicorn_in_thread

# The dispatch fixtures: fake Twilio and SMTP settings, a consul key, an in-test dispatcher.
consul = dispatch_fixtures.consul
dispatch_settings = dispatch_fixtures.dispatch_settings
dispatcher = dispatch_fixtures.dispatcher

TOKYO = {"lat": 35.5, "lon": 139.5}
LONG = {"ko": "즉시 대피하십시오. " * 40, "en": "Stay indoors."}
SHELTER = "Shelter in a sturdy building, away from windows, until told."
TOKYO_CIRCLE = {"circles": [{"lat": 35.68, "lon": 139.69, "radius_km": 50}]}


@pytest.fixture
def api(dispatch_settings: Settings, db: Session) -> Iterator[TestClient]:
    with bound_client(dispatch_settings, db) as client:
        yield client


def populate(api) -> None:
    register(api, location=TOKYO, language="ko", channels=["sms"])
    register(api, location=TOKYO, language="ko", channels=["sms", "email"])
    register(api, location=TOKYO, language="en", channels=["sms"])
    register(api, location={"country": "KR"}, stays=[stay(2, 5, **TOKYO)], channels=["email"])
    register(api, location={"lat": 13.75, "lon": 100.5})  # Bangkok: outside


def test_preview_shows_reach_by_language_and_country_and_the_sms_cost(
    api, consul, db, dispatcher, twilio
):
    populate(api)
    body = advisory_body(message=LONG)
    response = api.post("/v1/advisories/preview", json=body, headers=consul)
    assert response.status_code == 200, response.text
    preview = response.json()
    # The long Korean text is cut to the 3-segment budget; the English one takes two.
    assert preview == {
        "citizens": 4,
        "by_channel": {"sms": 3, "email": 2},
        "by_language": {"ko": 3, "en": 1},
        "by_country": {"JP": 4},
        "sms": {"segments": {"ko": 3, "en": 2}, "messages": 8},
    }
    assert db.scalar(select(func.count()).select_from(Alert)) == 0
    # What the dispatcher sends for the same advisory costs what the preview said.
    assert api.post("/v1/advisories", json=body, headers=consul).status_code == 201
    dispatcher.drain()
    sent = [sms_text.segments(m["body"]) for m in twilio.messages]
    assert sorted(sent) == [2, 3, 3] and sum(sent) == preview["sms"]["messages"]


def test_a_citizen_known_only_by_country_counts_there_and_costs_the_longer_text(
    api, consul, dispatcher, twilio
):
    register(api, location={"country": "JP"}, language="en", channels=["sms"])
    register(api, location=TOKYO, language="en", channels=["sms"])
    body = advisory_body(level=4, area=TOKYO_CIRCLE, message={"ko": "대피", "en": SHELTER})
    preview = api.post("/v1/advisories/preview", json=body, headers=consul).json()
    assert preview["by_country"] == {"JP": 2} and preview["by_language"] == {"en": 2}
    assert api.post("/v1/advisories", json=body, headers=consul).status_code == 201
    dispatcher.drain()
    sent = sorted(sms_text.segments(m["body"]) for m in twilio.messages)
    # The country-only citizen's text says the area covers part of Japan: a third segment.
    assert sent == [2, 3] and preview["sms"]["messages"] == 5
    assert preview["sms"]["segments"]["en"] == 2


def test_a_stored_draft_previews_as_its_body_would(api, consul, db):
    populate(api)
    body = advisory_body(message=LONG)
    expected = api.post("/v1/advisories/preview", json=body, headers=consul).json()
    draft = api.post("/v1/advisories", json={**body, "draft": True}, headers=consul)
    assert draft.status_code == 201 and draft.json()["status"] == "draft", draft.text
    advisories = db.scalar(select(func.count()).select_from(Advisory))
    response = api.post(f"/v1/advisories/{draft.json()['id']}/preview", headers=consul)
    assert response.status_code == 200, response.text
    assert response.json() == expected
    assert db.scalar(select(func.count()).select_from(Advisory)) == advisories
    assert db.scalar(select(func.count()).select_from(Alert)) == 0


def test_a_stored_advisory_in_force_previews_its_current_revision(api, consul):
    register(api, location=TOKYO, language="en", channels=["sms"])
    created = api.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    patched = api.patch(
        f"/v1/advisories/{created['id']}",
        json={"area": {"countries": ["TH"]}},
        headers=consul,
    )
    assert patched.status_code == 200, patched.text
    preview = api.post(f"/v1/advisories/{created['id']}/preview", headers=consul).json()
    assert preview["citizens"] == 0 and preview["sms"]["messages"] == 0
    assert preview["by_language"] == {} and preview["by_country"] == {}
    assert preview["sms"]["segments"]["en"] >= 1


def test_a_drill_counts_only_who_takes_exercises(api, consul):
    register(api, location=TOKYO, channels=["sms"])
    register(api, location=TOKYO, channels=["sms"], exercises=True)
    body = advisory_body(exercise=True)
    preview = api.post("/v1/advisories/preview", json=body, headers=consul).json()
    assert preview["citizens"] == 1 and preview["by_channel"] == {"sms": 1, "email": 0}
    assert preview["sms"]["messages"] == preview["sms"]["segments"]["ko"] == 2


def test_an_unknown_id_is_404_and_viewers_cannot_preview(api, consul, staff_headers):
    assert api.post("/v1/advisories/nope/preview", headers=consul).status_code == 404
    created = api.post("/v1/advisories", json=advisory_body(), headers=consul).json()
    viewer = staff_headers("viewer")
    assert api.post(f"/v1/advisories/{created['id']}/preview", headers=viewer).status_code == 403


def test_each_preview_is_audited_with_its_area_and_count(api, consul, db):
    """Found by a probe: 37 previews of a shrinking box located one citizen to 0.7 m, and the
    audit log said only "POST /v1/advisories/preview". Each entry now names the area and the
    count, so a hunt for one person reads as one."""
    populate(api)
    boxes = [
        {"countries": ["TH"]},
        {**TOKYO_CIRCLE, "countries": []},
    ]
    for area in boxes:
        body = advisory_body(area=area)
        assert api.post("/v1/advisories/preview", json=body, headers=consul).status_code == 200
    db.expire_all()
    said = [
        e.reason
        for e in db.scalars(
            select(AuditEntry).where(AuditEntry.action == "preview reach").order_by(AuditEntry.id)
        )
    ]
    assert said == [
        "area countries TH; reached 1",
        "area circle 35.6800,139.6900 r 50 km; reached 4",
    ]
    # A stored draft's preview says the same of its area (a review found it said nothing).
    draft = api.post(
        "/v1/advisories", json=advisory_body(area=TOKYO_CIRCLE, draft=True), headers=consul
    ).json()
    assert api.post(f"/v1/advisories/{draft['id']}/preview", headers=consul).status_code == 200
    db.expire_all()
    stored = db.scalars(
        select(AuditEntry).where(
            AuditEntry.action == "preview reach", AuditEntry.subject == draft["id"]
        )
    ).one()
    assert stored.reason == "area circle 35.6800,139.6900 r 50 km; reached 4"


def test_a_key_previews_areas_of_its_own_a_limited_number_of_times(database_url, db, staff_headers):
    """Found by a probe: shrinking areas one preview at a time pinned a citizen's registered
    point in 41 previews, and nothing but the audit log stood in the way. A key now previews
    areas it drew (a new one, a draft's) within rate_limit_preview; the preview of an advisory
    in force, which the console asks for on each view, is not counted."""
    settings = make_settings(database_url, rate_limit_preview="2/hour")
    with bound_client(settings, db) as client:
        hunter, other = staff_headers("consul"), staff_headers("consul")
        in_force = client.post("/v1/advisories", json=advisory_body(), headers=other).json()
        draft = client.post("/v1/advisories", json=advisory_body(draft=True), headers=hunter).json()
        later = client.post(
            "/v1/advisories",
            json=advisory_body(effective=in_days(2), expires=in_days(5)),
            headers=hunter,
        ).json()
        assert later["status"] == "active", later
        body = advisory_body(area=TOKYO_CIRCLE)
        for _ in range(2):
            assert (
                client.post("/v1/advisories/preview", json=body, headers=hunter).status_code == 200
            )
        refused = client.post("/v1/advisories/preview", json=body, headers=hunter)
        assert refused.status_code == 429, refused.text
        assert "reach previews" in refused.json()["detail"] and "Retry-After" in refused.headers
        assert (
            client.post(f"/v1/advisories/{draft['id']}/preview", headers=hunter).status_code == 429
        )
        # Nor one in force later, whose area a PATCH moves unseen (a review's way round).
        ahead = client.post(f"/v1/advisories/{later['id']}/preview", headers=hunter)
        assert ahead.status_code == 429, ahead.text
        # Bad input costs nothing, and the advisory in force still previews.
        bad = client.post("/v1/advisories/preview", json={"level": 9}, headers=hunter)
        assert bad.status_code == 422
        seen = client.post(f"/v1/advisories/{in_force['id']}/preview", headers=hunter)
        assert seen.status_code == 200, seen.text
        # Another key has its own.
        assert client.post("/v1/advisories/preview", json=body, headers=other).status_code == 200


def test_two_polygons_in_one_box_read_apart_in_the_audit_log():
    """Found in review: the log kept only a polygon's bounding box, so shapes narrowing down on
    one person inside a fixed box logged alike."""
    square = Polygon([(100, 13), (101, 13), (101, 14), (100, 14)])
    notched = Polygon([(100, 13), (101, 13), (101, 14), (100.5, 13.5), (100, 14)])
    said = [area_summary(Area(geometry=MultiPolygon([shape]))) for shape in (square, notched)]
    assert said[0] != said[1]
    assert all("lon 100.0000..101.0000 lat 13.0000..14.0000" in s for s in said)


def test_a_keys_reach_previews_are_counted_a_few_at_a_time(database_url, tmp_path, monkeypatch):
    """Found by a probe: one consul key ran 40 reach previews at once (each counts the
    registry in the area, seconds at a large one); the public endpoints answered ten times
    slower and the process grew to 2 GB. A key has at most reach_previews_per_key counts under
    way in a process (429 past them), the process reach_previews_at_once (503): refused at
    once, with Retry-After, and no thread waits for a turn."""
    if not database_url.startswith("postgresql"):
        pytest.skip(
            "SQLite runs one write transaction at a time: its previews already wait in turn"
        )
    counting, release = threading.Semaphore(0), threading.Event()
    real = previews.preview

    def held(*args: object, **kwargs: object) -> object:
        counting.release()
        assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(previews, "preview", held)
    with scratch_database(database_url, tmp_path, "reach_counts") as url:
        app = create_app(make_settings(url, reach_previews_at_once=3, reach_previews_per_key=2))
        with app.state.session_factory.begin() as session:
            made = {
                name: staff_service.create_key(session, name=name, role="consul").key
                for name in ("kim", "lee", "park")
            }
        keys = {name: {"Authorization": f"Bearer {key}"} for name, key in made.items()}
        held_socket = listening_socket()
        base = f"http://127.0.0.1:{held_socket.getsockname()[1]}"

        def preview(name: str) -> httpx.Response:
            return httpx.post(
                f"{base}/v1/advisories/preview",
                json=advisory_body(level=2),
                headers=keys[name],
                timeout=60,
            )

        with uvicorn_in_thread(app, held_socket), ThreadPoolExecutor(3) as pool:
            under_way = [pool.submit(preview, name) for name in ("kim", "kim", "lee")]
            for _ in under_way:
                assert counting.acquire(timeout=30), [
                    f.result().text for f in under_way if f.done()
                ]
            third_of_kims = preview("kim")
            parks = preview("park")
            release.set()
            assert [f.result().status_code for f in under_way] == [200, 200, 200]
            after = preview("kim"), preview("park")
    assert third_of_kims.status_code == 429, third_of_kims.text
    assert third_of_kims.headers["retry-after"] == "1"
    assert parks.status_code == 503, parks.text
    assert parks.headers["retry-after"] == "1"
    assert [answer.status_code for answer in after] == [200, 200]
