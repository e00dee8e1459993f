"""Every real feed sample in tests/data/feeds, imported, with what it must become."""

import collections
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from service.advisories.ingest import import_document
from service.advisories.models import Advisory
from service.geo import matching
from service.geo.areas import area_from_json
from tests.advisories.feed_samples import mofa_envelope, sample


def _run(db, format_name, data, *, at, **options):
    return import_document(
        db,
        format_name=format_name,
        data=data,
        issued_by="test-feed",
        now=at,
        max_vertices=50_000,
        **options,
    )


def _at(text: str) -> datetime:
    """A moment just after the sample was sent, when it was current."""
    return datetime.fromisoformat(text).astimezone(UTC) + timedelta(minutes=1)


def _covers(advisory: Advisory, lon: float, lat: float, country: str = "") -> bool:
    places = matching.PlaceSet.build([1], [lon], [lat], [country], [-1], [-1])
    return matching.place_hits(area_from_json(advisory.area), places).size == 1


def test_cap_a1_nationwide_without_geometry_maps_to_the_us(db):
    summary = _run(
        db,
        "cap",
        sample("cap/oasis-cap12-appendixA1-hsas-nationwide.xml"),
        at=_at("2003-04-02T14:39:01-05:00"),
    )
    (advisory,) = summary.created
    assert advisory.area["countries"] == ["US"] and advisory.level == "2"
    assert advisory.category == "security" and advisory.source == "cap"
    assert any("read from the area description" in n for n in advisory.area["notes"])


def test_cap_a2_polygon_swaps_lat_lon_once(db):
    summary = _run(
        db,
        "cap",
        sample("cap/oasis-cap12-appendixA2-thunderstorm-polygon.xml"),
        at=_at("2003-06-17T14:57:00-07:00"),
    )
    (advisory,) = summary.created
    assert advisory.level == "2" and advisory.title_en == "SEVERE THUNDERSTORM WARNING"
    assert _covers(advisory, -119.95, 38.47)  # Alpine County, California
    assert not _covers(advisory, 38.47, -119.95)  # the unswapped reading
    assert [z.split(":")[0] for z in advisory.area["zones"]] == ["SAME"] * 3


def test_cap_a4_bilingual_geocode_only_keeps_english_and_zones(db):
    summary = _run(
        db,
        "cap",
        sample("cap/oasis-cap12-appendixA4-amber-bilingual-geocode.xml"),
        at=_at("2003-06-11T22:39:00-07:00"),
    )
    (advisory,) = summary.created
    assert advisory.title_en and advisory.title_ko is None  # es-US is not a citizen language
    assert advisory.area["zones"] and advisory.area["geometry"] is None
    assert "zone codes" in advisory.area["notes"][0]
    assert not _covers(advisory, -122.0, 37.0, "US")


def test_cap_test_status_is_stored_but_never_alerts(db):
    summary = _run(
        db,
        "cap",
        sample("cap/ph-pagasa-tropical-cyclone-polygon.cap"),
        at=_at("2014-11-03T14:57:33+08:00"),
    )
    (advisory,) = summary.created
    assert advisory.alerts_citizens is False
    assert _covers(advisory, 125.0, 12.0)  # inside the Philippine area of responsibility


def test_cap_au_circle_in_km_with_iso_3166_2_geocode(db):
    summary = _run(
        db, "cap", sample("cap/au-nsw-rfs-fire-circles.cap"), at=_at("2011-10-05T23:04:00+10:00")
    )
    (advisory,) = summary.created
    assert advisory.area["circles"] == [{"lat": -35.3888, "lon": 147.0598, "radius_km": 25.0}]
    # The state geocode beside the circle is kept for the record, not alerted as a whole.
    assert "ISO3166:AU-NSW" in advisory.area["zones"] and advisory.area["subdivisions"] == []
    assert not _covers(advisory, 151.2, -33.87)  # Sydney, also in New South Wales
    assert _covers(advisory, 147.0598, -35.5) and not _covers(advisory, 147.0598, -35.7)


@pytest.mark.parametrize(
    ("path", "sent", "level", "title"),
    [
        ("cap/ca-naad-polygons-geocodes.xml", "2019-07-12T17:59:29+00:00", "1", None),
        ("cap/is-met-office-polygons.cap", "2021-09-10T13:30:26+00:00", "1", "Southeast gales"),
        ("cap/usgs-earthquake-circle-iso8859-1.cap", "2012-10-14T22:53:04+00:00", "1", None),
        ("cap/nws-blizzard-warning-polygon-cap11.xml", "2021-12-27T10:08:00-06:00", "2", None),
    ],
)
def test_cap_samples_become_one_advisory(db, path, sent, level, title):
    summary = _run(db, "cap", sample(path), at=_at(sent))
    (advisory,) = summary.created
    assert advisory.level == level and advisory.title_en
    if title:
        assert advisory.title_en == title


def test_cap_iso_8859_1_text_is_decoded_from_the_declaration(db):
    summary = _run(
        db,
        "cap",
        sample("cap/usgs-earthquake-circle-iso8859-1.cap"),
        at=_at("2012-10-14T22:53:04+00:00"),
    )
    (advisory,) = summary.created
    assert advisory.area["circles"][0]["radius_km"] == 25.0  # radius 0 = epicentre rule
    assert "\ufffd" not in advisory.message_en


def test_cap_iso_3166_2_geocode_alone_is_the_subdivision(db):
    data = sample("cap/au-nsw-rfs-fire-circles.cap").replace(
        b"<cap:circle>-35.3888,147.0598 25.0</cap:circle>", b""
    )
    summary = _run(db, "cap", data, at=_at("2011-10-05T23:04:00+10:00"))
    (advisory,) = summary.created
    assert advisory.area["subdivisions"] == ["AU-NSW"]
    assert _covers(advisory, 151.2, -33.87) and not _covers(advisory, 144.96, -37.81)  # Melbourne


def test_cap_1_1_zone_only_warning_is_kept_with_a_note(db):
    summary = _run(
        db,
        "cap",
        sample("cap/nws-blizzard-warning-polygon-cap11.xml"),
        at=_at("2021-12-27T10:08:00-06:00"),
    )
    (advisory,) = summary.created
    assert "UGC:MNZ020" in advisory.area["zones"] and advisory.area["notes"]


def test_reimport_is_idempotent(db):
    data = sample("cap/oasis-cap12-appendixA2-thunderstorm-polygon.xml")
    at = _at("2003-06-17T14:57:00-07:00")
    first = _run(db, "cap", data, at=at)
    second = _run(db, "cap", data, at=at)
    assert not second.created and not second.updated
    assert second.unchanged == first.created
    assert second.skipped == [(first.created[0] and second.skipped[0][0], "already imported")]


def _derived_original(update: bytes, sender: str, identifier: str) -> bytes:
    """The alert an Update or Cancel refers to, derived from it (samples stay untouched)."""
    text = update.decode("utf-8")
    start, end = text.index("<identifier>"), text.index("</identifier>")
    text = text[:start] + f"<identifier>{identifier}" + text[end:]
    text = text.replace("<msgType>Update</msgType>", "<msgType>Alert</msgType>")
    # The first report rated it higher; the update lowers it.
    return text.replace("<severity>Minor</severity>", "<severity>Severe</severity>").encode()


def test_cap_update_revises_the_referenced_alert(db):
    update = sample("cap-update-cancel/oasis-cap12-appendixA3-earthquake-update-references.xml")
    at = _at("2003-06-11T20:56:00-07:00")
    original = _run(
        db, "cap", _derived_original(update, "trinet@caltech.edu", "TRI13970876.1"), at=at
    )
    (advisory,) = original.created
    summary = _run(db, "cap", update, at=at)
    assert summary.updated == [advisory] and advisory.revision == 2
    assert advisory.level == "1"
    assert [r.revision for r in advisory.revisions] == [1, 2]


def test_cap_update_of_unknown_alerts_creates_one_with_both_polygons(db):
    data = sample("cap-update-cancel/nws-hurricane-warning-update-2polygons.xml")
    summary = _run(db, "cap", data, at=_at("2020-08-26T04:14:00-05:00"))
    (advisory,) = summary.created
    assert advisory.level == "3"  # severity Extreme
    assert _covers(advisory, -92.40, 30.267)  # inside the larger of the two polygons
    assert len(advisory.area["geometry"]["coordinates"]) == 2


def test_cap_eccc_all_clear_update_ends_the_watch_it_references(db):
    """ECCC ends a watch with an Update whose responseType is AllClear (urgency Past): a
    Cancel of what it references, whatever its headline says ("severe thunderstorm watch")."""
    data = sample("cap-update-cancel/ca-eccc-update-references-polygons.cap")
    at = _at("2012-05-02T23:21:04+00:00")
    alone = _run(db, "cap", data, at=at)
    assert alone.created == [] and alone.rejected[0][1] == "cancels no advisory known here"
    original = _derived_original(data, "cap@ec.gc.ca", "2.49.0.1.124.60f31a3a.2012")
    (watch,) = _run(db, "cap", original, at=at).created
    assert watch.title_en and watch.title_ko is None
    assert len(watch.area["zones"]) >= 10
    ended = _run(db, "cap", data.replace(b"<identifier>", b"<identifier>again-"), at=at)
    assert ended.updated == [watch] and watch.status == "cancelled"


@pytest.mark.parametrize(
    ("path", "sender", "identifier", "sent"),
    [
        (
            "cap-update-cancel/ipaws-athoc-cancel-no-info.cap",
            "AtHoc",
            "1017033100951096-517189320160225203219800",
            "2016-02-25T12:47:09-08:00",
        ),
        (
            "cap-update-cancel/ipaws-nv-dps-cancel.xml",
            "bbrundage@dps.state.nv.us",
            "AS-NV-e18921c7-1b35-4a81-9705-42d25c265ddd",
            "2019-04-19T11:46:20-06:00",
        ),
        (
            "cap-update-cancel/ntwc-tsunami-cancellation-update-circle.xml",
            "wcatwc@noaa.gov",
            "PAAQ-2-mg5a94",
            "2013-01-05T10:58:23+00:00",
        ),
    ],
)
def test_cap_cancellations(db, path, sender, identifier, sent):
    at = _at(sent) - timedelta(minutes=30)
    cancel = sample(path)
    unknown = _run(db, "cap", cancel, at=at)
    assert not unknown.created and unknown.rejected[0][1] == "cancels no advisory known here"
    alert = (
        b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>'
        + identifier.encode()
        + b"</identifier><sender>"
        + sender.encode()
        + b"</sender><sent>"
        + sent.encode()
        + b"</sent><status>Actual</status><msgType>Alert</msgType><scope>Public</scope><info>"
        b"<category>Safety</category><event>Test event</event><urgency>Immediate</urgency>"
        b"<severity>Severe</severity><certainty>Observed</certainty><headline>H</headline>"
        b"<area><areaDesc>x</areaDesc><circle>55.3,-134.9 50</circle></area></info></alert>"
    )
    (original,) = _run(db, "cap", alert, at=at).created
    summary = _run(db, "cap", cancel, at=at)
    assert summary.updated == [original] and original.status == "cancelled"
    assert original.revision == 2


def test_gdacs_green_items_are_skipped_by_default(db):
    summary = _run(
        db,
        "rss",
        sample("gdacs/gdacs-rss-2019-12-30-4items.xml"),
        at=_at("2019-12-30T01:35:11+00:00"),
    )
    assert not summary.created and len(summary.skipped) == 4
    assert all("Green" in why for _, why in summary.skipped)


def test_gdacs_with_green_mapped_to_level_1(db):
    summary = _run(
        db,
        "rss",
        sample("gdacs/gdacs-rss-2019-12-30-4items.xml"),
        at=_at("2019-12-30T01:35:11+00:00"),
        level_overrides={"Green": "1"},
    )
    by_label = {a.area["description"]: a for a in summary.created}
    assert len(summary.created) == 4
    quake = by_label["South Africa"]
    assert quake.area["countries"] == [] and quake.area["circles"]  # offshore: not all of ZA
    assert not _covers(quake, 28.0, -26.0, "ZA")  # Johannesburg
    drought = by_label["Bulgaria, Iraq, Iran, Turkey"]
    assert "(BG)" in drought.area["notes"][0]  # iso3 BGR -> BG
    assert _covers(drought, 32.0, 39.0)


def test_usgs_significant_month(db):
    data = sample("usgs/usgs-significant_month-2023-10-11.geojson")
    at = datetime.fromtimestamp(1697055391, UTC)
    summary = _run(db, "geojson", data, at=at)
    levels = collections.Counter(a.level for a in summary.created)
    # Seven events had ended (7 days after, 14 for orange) when the feed was generated.
    assert len(summary.created) == 11 and len(summary.skipped) == 7
    assert levels["special"] == 1 and levels["3"] == 2
    herat = next(a for a in summary.created if a.level == "special")
    assert "western Afghanistan" in herat.title_en and herat.title_ko.startswith("규모 6.3")
    assert herat.area["circles"][0]["radius_km"] == 100.0
    assert _covers(herat, 62.2, 34.35) and not _covers(herat, 69.2, 34.5)  # Herat, not Kabul
    again = _run(db, "geojson", data, at=at)
    assert not again.created and not again.updated


def test_nws_api_alert_without_geometry_keeps_zones(db):
    data = sample("nws/nws-api-alerts-active-zone-ORZ004-2019-12-20.json")
    summary = _run(db, "geojson", data, at=_at("2019-12-20T13:34:00-08:00"))
    (advisory,) = summary.created
    assert "UGC:ORZ004" in advisory.area["zones"]
    assert "zone codes" in advisory.area["notes"][0]
    assert not _covers(advisory, -122.68, 45.52, "US")  # Portland: not matched on zones


def test_us_state_department_feed(db):
    data = sample("us-state-dept/travel-state-gov-TAsTWs-2025-10-07.xml.gz")
    summary = _run(db, "rss", data, at=datetime(2025, 10, 8, tzinfo=UTC))
    assert len(summary.created) == 125 and len(summary.skipped) == 86 and not summary.rejected
    by_country = {a.area["countries"][0]: a for a in summary.created}
    assert by_country["DE"].title_en.startswith("Germany")  # FIPS GM
    assert by_country["GB"].title_en.startswith("United Kingdom")  # FIPS UK
    assert by_country["KP"].level == "3"  # US level 4 -> 3
    assert {"HK", "MO"} <= set(by_country)  # no Country-Tag: from the title
    assert "KR" not in by_country  # level 1 is no advisory
    levels = collections.Counter(a.level for a in summary.created)
    assert levels == {"1": 83, "2": 22, "3": 20}


def test_mofa_travel_alarms(db):
    summary = _run(db, "mofa", mofa_envelope(), at=datetime(2025, 1, 1, tzinfo=UTC))
    assert len(summary.created) == 139 and not summary.rejected
    levels = collections.Counter(a.level for a in summary.created)
    assert levels == {"1": 55, "2": 61, "3": 14, "4": 9}
    partial = [a for a in summary.created if a.area["notes"]]
    assert len(partial) == 56 and all("일부" in a.area["notes"][0] for a in partial)
    assert all(a.source == "mofa" and a.title_ko and a.title_en for a in summary.created)
    stored = db.scalars(select(Advisory).where(Advisory.source == "mofa")).all()
    assert len(stored) >= 139
