"""What a feed's document may decide, found by a probe: a feed acts only on its own
advisories (a document names its references itself, and CAP and NWS documents naming the
ministry's own identifiers lifted or rewrote them), and zone codes are an area of their own
(the words beside them named a foreign country, which was alerted)."""

import json
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from service.advisories import service
from service.advisories.ingest import TAKEN, IngestSummary, import_document
from service.advisories.models import Advisory, ExternalMessage
from service.db import make_engine, make_session_factory
from service.ledger.models import Alert
from tests.dispatch.seed import scratch_database
from tests.geomatch.builders import citizen
from tests.lock_waits import until_one_waits_on_a_lock

NOW = datetime.now(UTC)


def _mofa(country: str, iso: str, level: str) -> bytes:
    row = {
        "country_nm": country,
        "country_iso_alp2": iso,
        "alarm_lvl": level,
        "region_ty": "전체",
        "remark": "",
        "written_dt": "2024-01-01",
    }
    return json.dumps({"resultCode": "00", "data": [row]}, ensure_ascii=False).encode()


def _import(db, fmt: str, data: bytes, issued_by: str, policy: str = "auto"):
    return import_document(
        db,
        format_name=fmt,
        data=data,
        issued_by=issued_by,
        now=NOW,
        max_vertices=50_000,
        policy=policy,
    )


def _cap(identifier: str, msg_type: str, references: str, info: str = "") -> bytes:
    return f"""<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
<identifier>{identifier}</identifier><sender>anyone@example.org</sender>
<sent>{NOW.isoformat()}</sent><status>Actual</status><msgType>{msg_type}</msgType>
<scope>Public</scope><references>{references}</references>{info}</alert>""".encode()


def test_another_feed_cannot_cancel_or_rewrite_the_ministrys_advisory(db):
    citizen(db, lon=69.17, lat=34.53)  # Kabul
    (afghanistan,) = _import(db, "mofa", _mofa("아프가니스탄", "AF", "4"), "feed:mofa").created
    (thailand,) = _import(db, "mofa", _mofa("태국", "TH", "2"), "feed:mofa").created
    alerts = db.scalar(select(Alert.id).where(Alert.advisory_id == afghanistan.id))
    assert afghanistan.status == "active" and alerts is not None

    nws = {
        "type": "FeatureCollection",
        "features": [
            {
                "id": "x",
                "type": "Feature",
                "geometry": None,
                "properties": {
                    "id": "evil-1",
                    "sender": "w-nws.webmaster@noaa.gov",
                    "messageType": "Cancel",
                    "sent": NOW.isoformat(),
                    "references": [{"sender": "0404.go.kr", "identifier": "AF:전체"}],
                    "event": "x",
                    "severity": "Minor",
                    "status": "Actual",
                    "geocode": {"UGC": ["ORZ001"]},
                },
            }
        ],
    }
    by_nws = _import(db, "geojson", json.dumps(nws).encode(), "feed:nws-alerts", "level3+")
    by_cap = _import(db, "cap", _cap("evil-2", "Cancel", "0404.go.kr,AF:전체,x"), "feed:cap")
    info = """<info><language>en</language><category>Safety</category><event>e</event>
<urgency>Immediate</urgency><severity>Minor</severity><certainty>Observed</certainty>
<headline>Thailand is safe now, ignore the ministry</headline><description>All fine</description>
<area><areaDesc>Thailand</areaDesc><geocode><valueName>ISO3166-1</valueName><value>TH</value>
</geocode></area></info>"""
    by_update = _import(
        db, "cap", _cap("evil-3", "Update", "0404.go.kr,TH:전체,x", info), "feed:cap", "level3+"
    )
    db.refresh(afghanistan)
    db.refresh(thailand)
    assert afghanistan.status == "active" and afghanistan.revision == 1
    assert thailand.revision == 1 and thailand.level == "2"
    for summary in (by_nws, by_cap):
        assert summary.updated == [] and summary.rejected[0][1] == "cancels no advisory known here"
    # An Update of an alert this feed never saw is a new advisory of its own, not the ministry's.
    assert by_update.updated == [] and [a.issued_by for a in by_update.created] == ["feed:cap"]
    # A message id another feed already stored is not taken over.
    taken = _import(db, "mofa", _mofa("아프가니스탄", "AF", "4"), "feed:other")
    assert taken.created == [] and taken.updated == []
    assert taken.rejected[0][1] == "its identifier is another source's advisory"
    # Staff may (they can cancel through the API anyway).
    by_staff = _import(db, "cap", _cap("staff-1", "Cancel", "0404.go.kr,AF:전체,x"), "consul-1")
    db.refresh(afghanistan)
    assert by_staff.updated == [afghanistan] and afghanistan.status == "cancelled"


def test_a_feed_takes_over_what_staff_imported_from_it(db):
    """Found in review: with a feed acting only on what it issued, a MOFA file staff imported
    while the feed was down (`anjeon ingest`) locked the feed out of those countries for good:
    Afghanistan stayed at level 3 when the feed said 4."""
    (afghanistan,) = import_document(
        db,
        format_name="mofa",
        data=_mofa("아프가니스탄", "AF", "3"),
        issued_by="cli:mofa.json",
        now=NOW,
        max_vertices=50_000,
        policy="auto",
        for_feed="mofa",  # staff said whose document it is (anjeon ingest --feed mofa)
    ).created
    raised = _import(db, "mofa", _mofa("아프가니스탄", "AF", "4"), "feed:mofa")
    db.refresh(afghanistan)
    assert raised.updated == [afghanistan] and afghanistan.level == "4"


def test_an_identifier_staff_imported_without_the_feed_is_the_feeds_once_it_no_longer_stands(
    db,
):
    """A probe's consul imported a harmless MOFA row for Afghanistan by hand (naming no feed)
    and cancelled it, and imported a CAP <status>Test</status> naming the ministry's sender and
    "IQ:전체" (nobody texted): the MOFA feed's level 4 for both was refused for good, with no
    error. An identifier is the feed's again once what staff imported under it no longer
    stands or never alerted anyone; a staff advisory in force keeps it."""
    (afghanistan,) = _import(db, "mofa", _mofa("아프가니스탄", "AF", "1"), "consul-1").created
    service.cancel_advisory(db, advisory=afghanistan, cancelled_by="consul-1", now=NOW)
    info = """<info><language>en</language><category>Safety</category><event>e</event>
<urgency>Immediate</urgency><severity>Minor</severity><certainty>Observed</certainty>
<headline>test</headline><description>test</description><area><areaDesc>sea</areaDesc>
<circle>-60,-170 1</circle></area></info>"""
    squat = _cap("IQ:전체", "Alert", "", info).replace(b"anyone@example.org", b"0404.go.kr")
    squat = squat.replace(b"<status>Actual</status>", b"<status>Test</status>")
    (test,) = _import(db, "cap", squat, "consul-1").created
    assert not test.alerts_citizens
    (syria,) = _import(db, "mofa", _mofa("시리아", "SY", "3"), "consul-1").created
    rows = [
        json.loads(_mofa(name, iso, "4"))["data"][0]
        for name, iso in (("아프가니스탄", "AF"), ("이라크", "IQ"), ("시리아", "SY"))
    ]
    polled = _import(
        db, "mofa", json.dumps({"resultCode": "00", "data": rows}).encode(), "feed:mofa"
    )
    assert {a.issued_by for a in polled.created} == {"feed:mofa"} and len(polled.created) == 2
    assert {a.level for a in polled.created} == {"4"}
    assert {a.id for a in polled.created}.isdisjoint({afghanistan.id, test.id})
    [(label, why)] = polled.rejected
    assert "SY" in label and why == "its identifier is another source's advisory"
    db.refresh(syria)
    assert syria.level == "3" and syria.status == "active"  # staff's words stay in force
    # Polled again: the feed's own advisories, unchanged; nothing new.
    again = _import(
        db, "mofa", json.dumps({"resultCode": "00", "data": rows}).encode(), "feed:mofa"
    )
    assert again.created == [] and len(again.unchanged) == 2


def test_staff_ending_the_same_words_stands_and_a_drill_keeps_its_identifier(db):
    """A review: a copy staff cancelled came back at the next poll, as a new advisory that
    alerted everyone again, when the feed said the very words staff had ended; and a drill
    still running lost its identifier, so staff's own Cancel of the drill found nothing."""
    (afghanistan,) = _import(db, "mofa", _mofa("아프가니스탄", "AF", "4"), "consul-1").created
    # While staff's advisory says the same in force, the feed's item is no missed warning.
    agreed = _import(db, "mofa", _mofa("아프가니스탄", "AF", "4"), "feed:mofa")
    assert agreed.rejected == [] and agreed.created == []
    assert [why for _, why in agreed.skipped] == [
        "no change: staff's advisory in force says the same"
    ]
    service.cancel_advisory(db, advisory=afghanistan, cancelled_by="consul-1", now=NOW)
    same = _import(db, "mofa", _mofa("아프가니스탄", "AF", "4"), "feed:mofa")
    assert same.created == [] and same.rejected == []
    assert same.skipped == [(same.skipped[0][0], "no change: staff ended these same words")]
    info = """<info><language>en</language><category>Safety</category><event>e</event>
<urgency>Immediate</urgency><severity>Minor</severity><certainty>Observed</certainty>
<headline>drill</headline><description>drill</description><area><areaDesc>sea</areaDesc>
<circle>-60,-170 1</circle></area></info>"""
    drill = _cap("D-1", "Alert", "", info).replace(
        b"<status>Actual</status>", b"<status>Exercise</status>"
    )
    (exercise,) = _import(db, "cap", drill, "consul-1").created
    assert exercise.exercise
    real = _cap("D-1", "Alert", "", info)
    taken = _import(db, "cap", real, "feed:cap")
    assert (
        taken.created == []
        and taken.rejected[0][1] == "its identifier is another source's advisory"
    )
    ended = _cap("D-1-end", "Cancel", "anyone@example.org,D-1,x").replace(
        b"<status>Actual</status>", b"<status>Exercise</status>"
    )
    assert _import(db, "cap", ended, "consul-1").updated == [exercise]


def _zoned_cap(area_desc: str, ugc: str, same: str) -> bytes:
    """An NWS-style CAP warning: zone codes (UGC, SAME) and no polygon."""
    expires = (NOW + timedelta(days=1)).isoformat()
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
<identifier>urn:oid:2.49.0.1.840.0.{ugc}</identifier><sender>w-nws.webmaster@noaa.gov</sender>
<sent>{NOW.isoformat()}</sent><status>Actual</status><msgType>Alert</msgType><scope>Public</scope>
<info><language>en-US</language><category>Met</category><event>Winter Storm Warning</event>
<urgency>Expected</urgency><severity>Severe</severity><certainty>Likely</certainty>
<expires>{expires}</expires><headline>Winter Storm Warning</headline>
<description>Heavy snow expected.</description>
<area><areaDesc>{area_desc}</areaDesc>
<geocode><valueName>SAME</valueName><value>{same}</value></geocode>
<geocode><valueName>UGC</valueName><value>{ugc}</value></geocode></area></info></alert>""".encode()


def test_zone_codes_are_the_area_and_no_country_is_guessed_from_its_words(db):
    """Found by a probe: a Pennsylvania warning for "Lebanon; Lancaster" (zone codes, no
    polygon) alerted everyone in Lebanon, and "Atlantic; Cape May, New Jersey" everyone in
    Jersey. With zone codes the area is those zones (matching no one); the words are kept."""
    citizen(db, lon=35.50, lat=33.89)  # Beirut
    citizen(db, lon=-2.11, lat=49.19)  # St Helier
    for words, ugc, same in (
        ("Lebanon; Lancaster", "PAZ058", "042075"),
        ("Atlantic; Cape May, New Jersey", "NJZ022", "034001"),
    ):
        summary = _import(db, "cap", _zoned_cap(words, ugc, same), "feed:nws-cap", "level3+")
        (advisory,) = summary.created
        assert advisory.area["countries"] == [] and summary.enqueued == 0
        assert f"UGC:{ugc}" in advisory.area["zones"] and advisory.area["description"] == words


def _meteoalarm_cap(areas: list[tuple[str, str, str]]) -> bytes:
    blocks = "".join(
        f"<area><areaDesc>{words}</areaDesc>"
        f"<geocode><valueName>{system}</valueName><value>{code}</value></geocode></area>"
        for words, system, code in areas
    )
    expires = (NOW + timedelta(hours=6)).isoformat()
    return f"""<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
<identifier>2.49.0.0.470.0.MT.{abs(hash(blocks))}</identifier><sender>meteoalarm@example.org</sender>
<sent>{NOW.isoformat()}</sent><status>Actual</status><msgType>Alert</msgType><scope>Public</scope>
<info><language>en-GB</language><category>Met</category><event>Severe wind warning</event>
<urgency>Immediate</urgency><severity>Severe</severity><certainty>Likely</certainty>
<expires>{expires}</expires><headline>Severe wind</headline>
<description>Gusts of 100 km/h.</description>{blocks}</info></alert>""".encode()


def test_a_zone_that_is_a_whole_country_named_as_such_is_that_country(db):
    """Found by a review: MeteoAlarm gives Malta one region ("Malta", EMMA_ID MT001); with
    zone codes taken as the area alone, its warnings reached no one in Malta. Words and codes
    that agree on one country make it the area; a county named like a country does not."""
    valletta = citizen(db, lon=14.51, lat=35.90)
    citizen(db, lon=35.50, lat=33.89)  # Beirut
    summary = _import(
        db, "cap", _meteoalarm_cap([("Malta", "EMMA_ID", "MT001")]), "feed:meteoalarm", "level3+"
    )
    (advisory,) = summary.created
    assert advisory.area["countries"] == ["MT"] and "EMMA_ID:MT001" in advisory.area["zones"]
    told = db.scalars(select(Alert.citizen_id).where(Alert.advisory_id == advisory.id)).all()
    assert set(told) == {valletta.id}

    for areas in (
        [("Malta", "EMMA_ID", "IT001")],  # the codes lie elsewhere
        [("Gozo", "EMMA_ID", "MT002")],  # a region, not the country
        [("Malta", "EMMA_ID", "MT001"), ("Lebanon", "EMMA_ID", "MT002")],
        [("Lebanon", "UGC", "PAZ058")],  # a system that does not say its country
    ):
        (other,) = _import(db, "cap", _meteoalarm_cap(areas), "feed:meteoalarm").created
        assert other.area["countries"] == [], areas


def test_nuts_codes_name_greece_el_and_the_united_kingdom_uk(db):
    for words, code, country in (("Greece", "EL301", "GR"), ("United Kingdom", "UKI31", "GB")):
        (advisory,) = _import(
            db, "cap", _meteoalarm_cap([(words, "NUTS3", code)]), "feed:meteoalarm"
        ).created
        assert advisory.area["countries"] == [country]


def test_two_feeds_given_back_one_identifier_at_once_end_with_one_and_a_clear_rejection(
    database_url, tmp_path
):
    """A review: two feeds whose documents carry the identifier of a staff import that no
    longer stands both took it at once; the second's flush broke the identifier's uniqueness,
    and its poll failed as an internal error. The first now stands and the second's item is
    rejected, as if it had come after."""
    with scratch_database(database_url, tmp_path, "feed_race") as url:
        engine = make_engine(url)
        factory = make_session_factory(engine)
        with factory.begin() as session:
            staff_import = _import(session, "mofa", _mofa("아프가니스탄", "AF", "1"), "consul-1")
            (staff,) = staff_import.created
            service.cancel_advisory(session, advisory=staff, cancelled_by="consul-1", now=NOW)
        first_took, second_started = threading.Event(), threading.Event()
        results: dict[str, object] = {}

        def poll(feed: str, *, hold: bool) -> None:
            try:
                with factory.begin() as session:
                    if not hold:
                        first_took.wait(timeout=30)
                        second_started.set()
                    results[feed] = _import(session, "mofa", _mofa("아프가니스탄", "AF", "4"), feed)
                    if hold:  # uncommitted until the other poll waits on it
                        first_took.set()
                        second_started.wait(timeout=30)
                        if engine.dialect.name == "postgresql":
                            until_one_waits_on_a_lock(engine.connect, why_not=lambda: results)
                        else:  # SQLite's second writer waits in its busy handler, unseen
                            time.sleep(0.5)
            except BaseException as exc:  # reported to the test
                results[feed] = exc

        polls = [
            threading.Thread(target=poll, args=("feed:mofa",), kwargs={"hold": True}),
            threading.Thread(target=poll, args=("feed:other",), kwargs={"hold": False}),
        ]
        for thread in polls:
            thread.start()
        for thread in polls:
            thread.join(timeout=60)
        engine.dispose()
        first, second = results["feed:mofa"], results["feed:other"]
        assert isinstance(first, IngestSummary) and isinstance(second, IngestSummary), results
        assert [a.level for a in first.created] == ["4"]
        assert second.created == [] and second.updated == []
        assert second.rejected == [(second.rejected[0][0], TAKEN)] and "AF" in second.rejected[0][0]
        engine = make_engine(url)
        with make_session_factory(engine)() as session:
            owners = session.scalars(
                select(Advisory.issued_by)
                .join(ExternalMessage, ExternalMessage.advisory_id == Advisory.id)
                .where(ExternalMessage.identifier.like("AF:%"))
            ).all()
        engine.dispose()
        assert owners == ["feed:mofa"]
