"""What a feed's documents may do, found by a probe of the feeds: an unchanged list polled
again alerted everyone again; a feed's repeated proposal kept replacing itself; one feed lifted
what staff had imported from another; an Update whose headline said "ferries cancelled" was a
Cancel; a CAP Test message cancelled or silenced real advisories."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import func, select, update

from service.advisories import approval
from service.advisories.feeds.config import Feed
from service.advisories.ingest import import_document
from service.advisories.models import Advisory, AdvisoryProposal
from service.app import create_app
from service.ledger import states
from service.ledger.models import Alert
from service.staff import service as staff_service
from tests.advisories.test_feed_trust import _mofa
from tests.conftest import make_settings
from tests.dispatch.seed import scratch_database
from tests.geomatch.builders import citizen

NOW = datetime.now(UTC)


def _cap(
    identifier: str,
    msg_type: str = "Alert",
    references: str = "",
    *,
    severity: str = "Severe",
    headline: str = "Storm",
    status: str = "Actual",
    event: str = "Typhoon",
    sent: datetime = NOW,
) -> bytes:
    expires = (NOW + timedelta(days=2)).isoformat()
    info = f"""<info><language>en</language><category>Met</category><event>{event}</event>
<urgency>Immediate</urgency><severity>{severity}</severity><certainty>Observed</certainty>
<expires>{expires}</expires><headline>{headline}</headline><description>d</description>
<area><areaDesc>Tokyo</areaDesc><circle>35.68,139.76 50</circle></area></info>"""
    return f"""<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
<identifier>{identifier}</identifier><sender>jma@example.org</sender>
<sent>{sent.isoformat()}</sent><status>{status}</status><msgType>{msg_type}</msgType>
<scope>Public</scope><references>{references}</references>{info}</alert>""".encode()


def _import(db, fmt: str, data: bytes, by: str, policy: str = "level3+"):
    return import_document(
        db, format_name=fmt, data=data, issued_by=by, now=NOW, max_vertices=50_000, policy=policy
    )


def _alerts(db, advisory: Advisory) -> int:
    return db.scalar(
        select(func.count()).select_from(Alert).where(Alert.advisory_id == advisory.id)
    )


def _approve(db, advisory: Advisory) -> None:
    waiting = approval.pending(db, advisory)
    approval.approve(db, advisory=advisory, by="consul-2", now=NOW, proposal_id=waiting.id)


def _polled(db, poll, path, data: bytes, feed: Feed) -> str:
    """One scheduled poll of `data` (its own session, as the scheduler's), then everything
    sent and forgotten, so the next poll reads the advisory from the database."""
    path.write_bytes(data)
    outcome = poll(feed, approval=None)
    db.execute(update(Alert).values(status=states.SENT))
    db.expire_all()
    return outcome


def test_an_unchanged_list_polled_again_alerts_nobody_again(db, poll, tmp_path):
    """The list's +09:00 times came back from the database in UTC: compared as written, each
    poll was a new revision and alerted every citizen in every listed country again."""
    citizen(db, lon=100.5, lat=13.75)  # Bangkok
    path = tmp_path / "mofa.json"
    feed = Feed(name="mofa", path=str(path), format="mofa", interval_s=600)
    for _ in range(3):
        _polled(db, poll, path, _mofa("태국", "TH", "2"), feed)
    thailand = db.scalar(select(Advisory).where(Advisory.issued_by == "feed:mofa"))
    assert thailand.revision == 1 and _alerts(db, thailand) == 1


def test_a_proposal_polled_again_waits_as_it_was_and_is_withdrawn_when_the_feed_goes_back(
    db, poll, tmp_path
):
    """A level 4 waiting for approval, polled again unchanged, kept its proposal (each poll
    had replaced it: an approver read one id and got a 409); a lowering to 3 that waits is
    withdrawn when the list says 4 again, so nobody can put it in force later."""
    citizen(db, lon=69.17, lat=34.53)  # Kabul
    path = tmp_path / "mofa.json"
    feed = Feed(name="mofa", path=str(path), format="mofa", interval_s=600)
    _polled(db, poll, path, _mofa("아프가니스탄", "AF", "4"), feed)
    afghanistan = db.scalar(select(Advisory).where(Advisory.issued_by == "feed:mofa"))
    first = approval.pending(db, afghanistan).id
    _polled(db, poll, path, _mofa("아프가니스탄", "AF", "4"), feed)
    assert approval.pending(db, afghanistan).id == first
    _approve(db, afghanistan)
    assert afghanistan.status == "active" and afghanistan.level == "4"

    _polled(db, poll, path, _mofa("아프가니스탄", "AF", "3"), feed)  # waits: lowers a level 4
    lowering = approval.pending(db, afghanistan).id
    _polled(db, poll, path, _mofa("아프가니스탄", "AF", "3"), feed)
    assert approval.pending(db, afghanistan).id == lowering
    _polled(db, poll, path, _mofa("아프가니스탄", "AF", "4"), feed)
    assert approval.pending(db, afghanistan) is None
    withdrawn = db.get(AdvisoryProposal, lowering)
    assert (withdrawn.status, withdrawn.reason) == ("rejected", "withdrawn by its source")
    db.refresh(afghanistan)
    assert afghanistan.level == "4" and afghanistan.revision == 1


def test_a_feed_cannot_lift_what_staff_imported_from_another(db):
    """A feed acts on a staff import only when staff named that feed at the import: a probe's
    weather feed lifted the ministry's level 4, and a review's feed did so after a harmless
    alert in the ministry's own sender's name (a document names its sender itself)."""
    citizen(db, lon=69.17, lat=34.53)  # Kabul
    (afghanistan,) = import_document(
        db,
        format_name="mofa",
        data=_mofa("아프가니스탄", "AF", "4"),
        issued_by="cli:mofa.json",
        now=NOW,
        max_vertices=50_000,
        policy="required",
        for_feed="mofa",
    ).created
    _approve(db, afghanistan)
    posing = _cap("w-1").replace(b"jma@example.org", b"0404.go.kr")
    posing = posing.replace(b"35.68,139.76 50", b"0,-150 10")  # mid-ocean: reaches nobody
    assert _import(db, "cap", posing, "feed:weather").created
    for by in ("feed:weather", "feed:new-cap"):  # one that posed as the ministry, one new
        lifted = _import(db, "cap", _cap(f"{by}-x", "Cancel", "0404.go.kr,AF:전체,x"), by)
        assert lifted.rejected == [(f"jma@example.org,{by}-x", "cancels no advisory known here")]
    db.refresh(afghanistan)
    assert afghanistan.status == "active" and afghanistan.level == "4"
    # The MOFA feed itself, back after the outage, takes it over.
    lowered = _import(db, "mofa", _mofa("아프가니스탄", "AF", "3"), "feed:mofa")
    assert lowered.updated == [afghanistan]


def test_a_staff_import_naming_no_feed_is_no_feeds_and_a_feed_named_must_exist(
    db, client, staff_headers
):
    (thailand,) = _import(db, "mofa", _mofa("태국", "TH", "2"), "cli:mofa.json").created
    taken = _import(db, "mofa", _mofa("태국", "TH", "3"), "feed:mofa")
    assert taken.rejected[0][1] == "its identifier is another source's advisory"
    db.refresh(thailand)
    assert thailand.level == "2"
    unknown = client.post(
        "/v1/advisories/import?feed=nosuch",
        content=_mofa("태국", "TH", "3"),
        headers={**staff_headers("consul"), "Content-Type": "application/json"},
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "feed"


def _approved_level3(db) -> Advisory:
    citizen(db, lon=139.76, lat=35.68)  # Tokyo
    (typhoon,) = _import(db, "cap", _cap("T1", severity="Extreme"), "feed:jma").created
    assert typhoon.status == "pending_approval" and typhoon.level == "3"
    _approve(db, typhoon)
    assert typhoon.status == "active"
    return typhoon


def test_words_of_cancellation_in_an_update_do_not_lift_the_warning(db):
    typhoon = _approved_level3(db)
    headline = "Typhoon warning remains in force; all ferries cancelled"
    update = _cap("T2", "Update", "jma@example.org,T1,x", severity="Extreme", headline=headline)
    _import(db, "cap", update, "feed:jma")
    db.refresh(typhoon)
    assert typhoon.status == "active"
    # An Update that is the all clear still ends it: CAP's responseType AllClear.
    clear = _cap("T3", "Update", "jma@example.org,T1,x", headline="Typhoon warning").replace(
        b"<urgency>", b"<responseType>AllClear</responseType><urgency>"
    )
    ended = _import(db, "cap", clear, "feed:jma")
    db.refresh(typhoon)
    assert ended.updated == [typhoon] and typhoon.status == "cancelled"


def test_a_test_message_neither_cancels_nor_rewrites_a_real_advisory(db):
    typhoon = _approved_level3(db)
    (storm,) = _import(db, "cap", _cap("L2"), "feed:jma").created
    assert storm.alerts_citizens and storm.level == "2"
    test_cancel = _cap("X1", "Cancel", "jma@example.org,T1,x", status="Test")
    test_update = _cap("X2", "Update", "jma@example.org,L2,x", status="Test", headline="test")
    drill_cancel = _cap("X3", "Cancel", "jma@example.org,T1,x", status="Exercise")
    for document in (test_cancel, test_update, drill_cancel):
        _import(db, "cap", document, "feed:jma")
    db.refresh(typhoon)
    db.refresh(storm)
    assert typhoon.status == "active" and typhoon.revision == 1
    assert storm.alerts_citizens and storm.revision == 1 and storm.title_en == "Storm"


def test_a_feeds_level_2_reaching_many_waits_for_a_second_person(db, poll, tmp_path):
    """Under its "level3+" policy a feed's level 2 over the whole earth went to everyone at
    once: past the feed's reach threshold it waits too; below it, it goes."""
    for lon, lat in ((139.76, 35.68), (2.35, 48.85), (-74.0, 40.7)):
        citizen(db, lon=lon, lat=lat)
    world = "-89,-179 -89,0 -89,179 89,179 89,0 89,-179 -89,-179"
    everywhere = _cap("W1").replace(
        b"<circle>35.68,139.76 50</circle>", f"<polygon>{world}</polygon>".encode()
    )
    path = tmp_path / "cap.xml"
    feed = Feed(name="weather", path=str(path), format="cap", interval_s=600)
    path.write_bytes(everywhere)
    poll(feed, approval=None, min_reach=2)
    (wide,) = db.scalars(select(Advisory).where(Advisory.issued_by == "feed:weather"))
    assert wide.level == "2" and wide.status == "pending_approval" and _alerts(db, wide) == 0
    path.write_bytes(_cap("W2"))  # Tokyo only: one citizen
    poll(feed, approval=None, min_reach=2)
    tokyo = db.scalar(
        select(Advisory).where(Advisory.issued_by == "feed:weather", Advisory.id != wide.id)
    )
    assert tokyo.status == "active" and _alerts(db, tokyo) == 1


def test_an_update_held_up_behind_a_newer_one_is_not_applied(db):
    """The newer Update came first; the older one, late, brought its replaced words back and
    alerted everyone again."""
    citizen(db, lon=139.76, lat=35.68)  # Tokyo
    (storm,) = _import(db, "cap", _cap("S0", sent=NOW - timedelta(hours=1)), "feed:jma").created
    newer = _cap(
        "S2", "Update", "jma@example.org,S0,x", headline="v2", sent=NOW - timedelta(minutes=20)
    )
    older = _cap(
        "S1", "Update", "jma@example.org,S0,x", headline="v1", sent=NOW - timedelta(minutes=30)
    )
    assert _import(db, "cap", newer, "feed:jma").updated == [storm]
    late = _import(db, "cap", older, "feed:jma")
    assert late.skipped == [("jma@example.org,S1", "older than a message already applied")]
    db.refresh(storm)
    assert storm.revision == 2 and storm.title_en == "v2" and _alerts(db, storm) == 2
    assert _import(db, "cap", older, "feed:jma").skipped[0][1] == "already imported"


def test_a_cancel_held_up_behind_a_newer_update_does_not_lift_it(db):
    """Found in review: the sender cancelled, then issued an Update that kept the warning in
    force; the Cancel, arriving late, lifted it."""
    citizen(db, lon=139.76, lat=35.68)  # Tokyo
    (storm,) = _import(db, "cap", _cap("C0", sent=NOW - timedelta(hours=1)), "feed:jma").created
    newer = _cap("C2", "Update", "jma@example.org,C0,x", sent=NOW - timedelta(minutes=10))
    assert _import(db, "cap", newer, "feed:jma").updated == [storm]
    late = _cap("C1", "Cancel", "jma@example.org,C0,x", sent=NOW - timedelta(minutes=30))
    assert _import(db, "cap", late, "feed:jma").skipped[0][1] == (
        "older than a message already applied"
    )
    db.refresh(storm)
    assert storm.status == "active"


def test_the_admins_poll_now_holds_what_reaches_past_the_feeds_threshold(database_url, tmp_path):
    """Found in review: the admin's "poll now" left the threshold at its default."""
    with scratch_database(database_url, tmp_path, "poll_now") as url:
        app = create_app(make_settings(url, approval="required", feed_approval_min_reach=1))
        path = tmp_path / "cap.xml"
        path.write_bytes(_cap("P1"))  # a level 2 over Tokyo
        app.state.feeds = [Feed(name="weather", path=str(path), format="cap", interval_s=600)]
        with app.state.session_factory.begin() as session:
            admin = staff_service.create_key(session, name="feed-admin", role="admin").key
            for _ in range(2):
                citizen(session, lon=139.76, lat=35.68)
        with TestClient(app) as client:
            answer = client.post(
                "/v1/feeds/weather/poll", headers={"Authorization": f"Bearer {admin}"}
            )
            assert answer.status_code == 200, answer.text
        with app.state.session_factory() as session:
            held = session.scalar(select(Advisory).where(Advisory.issued_by == "feed:weather"))
            assert (held.level, held.status) == ("2", "pending_approval")
        app.state.session_factory.kw["bind"].dispose()


def _quake(depth_km: float) -> bytes:
    """One USGS quake near Tokyo, as the significant-quakes GeoJSON republishes it."""
    feature = {
        "type": "Feature",
        "id": "us7000flap",
        "properties": {
            "mag": 6.1,
            "place": "10 km N of Hachioji, Japan",
            "time": int((NOW - timedelta(hours=1)).timestamp() * 1000),
            "url": "https://earthquake.usgs.gov/x",
            "alert": "yellow",
            "tsunami": 0,
        },
        "geometry": {"type": "Point", "coordinates": [139.76, 35.68, depth_km]},
    }
    return json.dumps({"type": "FeatureCollection", "features": [feature]}).encode()


def test_an_item_flapping_between_two_versions_alerts_once_for_the_change(db):
    """Two caches serving a quake's depth as 10 and 11 km in turn made a revision and an SMS
    at every poll; a new depth afterwards is still a change."""
    citizen(db, lon=139.76, lat=35.68)  # Tokyo
    outcomes = []
    for depth in (10.0, 11.0, 10.0, 11.0, 10.0, 11.0, 12.0):
        summary = _import(db, "geojson", _quake(depth), "feed:usgs-significant")
        outcomes.append(summary.skipped[0][1] if summary.skipped else "applied")
        db.execute(update(Alert).values(status=states.SENT))  # sent meanwhile
    quake = db.scalar(select(Advisory).where(Advisory.issued_by == "feed:usgs-significant"))
    assert outcomes == [
        "applied",
        "applied",
        "no change: back to revision 1",
        "no change",
        "no change: back to revision 1",
        "no change",
        "applied",
    ]
    assert quake.revision == 3 and _alerts(db, quake) == 3


def test_staff_see_a_feeds_host_and_path_never_the_password_or_key_in_its_url(
    client, staff_headers
):
    """Found by a probe: GET /v1/feeds, open to viewers, gave a feed's URL whole, with the
    user and password before the host and an api_key in its query."""
    feeds = [
        Feed(
            name="protected",
            url="https://feeduser:S3cretPass@feeds.example:8443/cap.xml?api_key=TOPSECRET123",
            format="cap",
        ),
        Feed(name="v6", url="http://[2001:db8::1]/alerts.xml", format="cap"),
        Feed(name="local", path="tests/data/feeds/none.xml", format="cap"),
    ]
    client.app.state.feeds = feeds
    response = client.get("/v1/feeds", headers=staff_headers("viewer"))
    assert response.status_code == 200, response.text
    assert "S3cretPass" not in response.text and "TOPSECRET123" not in response.text
    assert "feeduser" not in response.text
    assert [f["source"] for f in response.json()["items"]] == [
        "https://feeds.example:8443/cap.xml?…",
        "http://[2001:db8::1]/alerts.xml",
        "tests/data/feeds/none.xml",
    ]


@pytest.mark.parametrize("url", ["https://h:99999/a.xml", "https://u:p@h:abc/x"])
def test_a_feed_url_with_a_bad_port_is_refused_when_the_file_is_read(url):
    """A review: such a URL loaded, and GET /v1/feeds then failed whole (500) on showing it."""
    with pytest.raises(ValidationError, match="url"):
        Feed(name="x", url=url, format="cap")
