"""Bad input makes a "rejected" item; a bug in a parser does not: it propagates, and a scheduled
poll logs it with its traceback and records the feed's outcome as an error."""

import json
import logging
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from service.advisories import formats
from service.advisories.feeds.config import Feed
from service.advisories.formats import cap_terms, geojson
from service.advisories.ingest import import_document
from service.advisories.models import Advisory, FeedState
from tests.advisories.feed_samples import FEEDS, sample

USGS = "usgs/usgs-significant_month-2023-10-11.geojson"
CAP = "cap/oasis-cap12-appendixA2-thunderstorm-polygon.xml"


def _broken(*args, **kwargs):
    return 1 / 0


def _usgs_with(**changes) -> bytes:
    document = json.loads(sample(USGS))
    document["features"] = document["features"][:1]
    document["features"][0]["properties"].update(changes)
    return json.dumps(document).encode()


def _feature_collection(*features) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": list(features)}).encode()


def _nws_feature(**props) -> dict:
    values = {"@type": "wx:Alert", "id": "A", "sender": "s", "sent": "2030-01-01T00:00:00Z"}
    values.update(props)
    return {"type": "Feature", "geometry": None, "properties": values}


@pytest.mark.parametrize(
    ("format_name", "document", "reason"),
    [
        ("geojson", _usgs_with(time="yesterday"), "malformed item (TypeError"),
        ("geojson", _usgs_with(mag="strong"), "malformed item (ValueError"),
        ("geojson", _usgs_with(mag="nan"), "magnitude nan"),
        ("geojson", _usgs_with(time=1e20), "time 1e+20 is out of range"),  # OSError
        ("geojson", _usgs_with(time=1e23), "malformed item (OverflowError"),
        ("geojson", _feature_collection(5), "a feature is a JSON object"),
        ("geojson", _feature_collection({"properties": [1]}), "properties is a JSON object"),
        ("geojson", _feature_collection(_nws_feature(headline=["x"])), "headline is text"),
        ("geojson", _feature_collection(_nws_feature(geocode=[1])), "geocode.UGC"),
        (
            "mofa",
            json.dumps({"resultCode": "00", "data": [{"country_iso_alp2": "JP", "remark": {}}]}),
            "remark is text",
        ),
        ("mofa", json.dumps({"resultCode": "00", "data": ["JP"]}), "a row is a JSON object"),
        (
            "rss",
            sample("gdacs/gdacs-rss-2019-12-30-4items.xml")
            .replace(b"<gdacs:alertlevel>Green", b"<gdacs:alertlevel>Red")
            .replace(b"55.0780533046962 81.0780533046962", b"west east", 1),
            "malformed item (ValueError",
        ),
    ],
)
def test_bad_input_is_a_rejected_item(format_name, document, reason):
    if isinstance(document, str):
        document = document.encode()
    parsed = formats.parse(format_name, document)
    assert any(reason in r.reason for r in parsed.rejected), parsed.rejected


@pytest.mark.parametrize(
    ("target", "name", "relative", "format_name"),
    [
        (cap_terms, "level", CAP, "cap"),
        (geojson, "_usgs", USGS, "geojson"),
    ],
)
def test_a_parser_bug_propagates(monkeypatch, target, name, relative, format_name):
    monkeypatch.setattr(target, name, _broken)
    with pytest.raises(ZeroDivisionError):
        formats.parse(format_name, sample(relative))
    with pytest.raises(ZeroDivisionError):
        formats.parse(None, sample(relative))  # sniffed alike


def test_a_parser_bug_is_no_rejected_item_in_an_import(monkeypatch, db):
    monkeypatch.setattr(geojson, "_usgs", _broken)
    before = db.scalar(select(func.count()).select_from(Advisory))
    with pytest.raises(ZeroDivisionError):
        import_document(
            db,
            format_name="geojson",
            data=sample(USGS),
            issued_by="test",
            now=datetime.now(UTC),
            max_vertices=50_000,
        )
    assert db.scalar(select(func.count()).select_from(Advisory)) == before


def test_a_parser_bug_in_a_scheduled_poll_is_logged_and_recorded(monkeypatch, poll, db, caplog):
    monkeypatch.setattr(geojson, "_usgs", _broken)
    feed = Feed.model_validate(
        {"name": "usgs-file", "path": str(FEEDS / USGS), "format": "geojson"}
    )
    with caplog.at_level(logging.ERROR, logger="anjeon.feeds"):
        outcome = poll(feed)
    assert outcome == "error"
    state = db.get(FeedState, "usgs-file")
    assert state.last_outcome == "error" and "ZeroDivisionError" in state.last_detail
    assert "rejected" not in state.last_detail
    (record,) = [r for r in caplog.records if r.name == "anjeon.feeds"]
    assert record.exc_info and record.exc_info[0] is ZeroDivisionError  # with its traceback
