"""Documents that once answered 500: XML declared in EUC-KR or Shift_JIS is decoded; an encoding
that cannot be decoded safely, and JSON nested too deep, get a 4xx naming the document, through
the API and in a scheduled poll's feed state."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from service.advisories.feeds.config import Feed
from service.advisories.models import Advisory, FeedState

KOREAN_TITLE = "똠방각하 지역 호우 경보"  # 똠 is in CP949 only, which Korean servers label EUC-KR
JAPANESE_TITLE = "気象庁 大雨特別警報 ①"  # ① is in CP932 only, labelled Shift_JIS alike


def _cap(encoding: str, language: str, headline: str, codec: str | None = None) -> bytes:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    text = f"""<?xml version="1.0" encoding="{encoding}"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>enc-{encoding}-{language}</identifier><sender>test@example.org</sender>
  <sent>{tomorrow}</sent><status>Actual</status><msgType>Alert</msgType><scope>Public</scope>
  <info><language>{language}</language><category>Met</category><event>Rain</event>
    <urgency>Immediate</urgency><severity>Severe</severity><certainty>Likely</certainty>
    <headline>{headline}</headline><description>{headline}</description>
    <area><areaDesc>x</areaDesc><circle>37.5,127.0 10</circle></area></info>
</alert>"""
    return text.encode(codec or encoding)


DEEP_GEOJSON = (
    b'{"type": "FeatureCollection", "features": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
)
DEEP_MOFA = b'{"resultCode": "00", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
# Under the JSON parser's own limit, yet deep enough to break repr() of the value in a message.
NESTED_ROW = (
    b'{"resultCode": "00", "data": [{"country_iso_alp2": '
    + b"[" * 900
    + b"]" * 900
    + b', "alarm_lvl": "2"}]}'
)
REFUSED = [
    (
        "utf-7",
        _cap("UTF-7", "en-US", "+ADw-script+AD4-", codec="ascii"),
        "cannot be decoded safely",
    ),
    ("unknown encoding", _cap("x-klingon", "en-US", "Rain", codec="ascii"), "unknown encoding"),
    (
        "bad EUC-KR bytes",
        _cap("EUC-KR", "ko-KR", "x", codec="ascii").replace(b">x<", b">\xff\xfe<"),
        "not valid EUC-KR",
    ),
    ("deep GeoJSON", DEEP_GEOJSON, "nested more than"),
    ("deep MOFA", DEEP_MOFA, "nested more than"),
    ("nested MOFA row", NESTED_ROW, "nested more than"),
    # PostgreSQL takes no NUL in text: this was a 500 there.
    (
        "NUL in a GeoJSON title",
        b'{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": '
        b'{"title": "M 6.1 \\u0000 Japan", "mag": 6.1}, "geometry": {"type": "Point", '
        b'"coordinates": [139.7, 35.7]}}]}',
        "NUL",
    ),
]


def _post(client, headers, body, content_type):
    return client.post(
        "/v1/advisories/import", content=body, headers={**headers, "content-type": content_type}
    )


def _count(db):
    return db.scalar(select(func.count()).select_from(Advisory))


@pytest.mark.parametrize("content_type", ["application/cap+xml", "application/xml"])
def test_euc_kr_cap_is_decoded(client, staff_headers, content_type):
    body = _cap("EUC-KR", "ko-KR", KOREAN_TITLE, codec="cp949")
    assert KOREAN_TITLE.encode("utf-8") not in body  # really sent in the Korean encoding
    response = _post(client, staff_headers("consul"), body, content_type)
    assert response.status_code == 201, response.text
    assert response.json()["advisories"][0]["title"]["ko"] == KOREAN_TITLE


def test_shift_jis_cap_is_decoded(client, staff_headers):
    body = _cap("Shift_JIS", "ja-JP", JAPANESE_TITLE, codec="cp932")
    response = _post(client, staff_headers("consul"), body, "application/cap+xml")
    assert response.status_code == 201, response.text
    advisory = response.json()["advisories"][0]
    assert advisory["title"]["en"] == JAPANESE_TITLE  # kept, with a note: no ko or en block
    assert "text only in ja-jp" in advisory["area"]["notes"]


@pytest.mark.parametrize("content_type", ["named", "application/octet-stream"])
@pytest.mark.parametrize(("name", "document", "why"), REFUSED, ids=[r[0] for r in REFUSED])
def test_undecodable_or_too_deep_is_4xx_naming_the_document(
    client, staff_headers, db, name, document, why, content_type
):
    if content_type == "named":
        content_type = "application/json" if document.startswith(b"{") else "application/cap+xml"
        content_type = "application/geo+json" if b"FeatureCollection" in document else content_type
    before = _count(db)
    response = _post(client, staff_headers("consul"), document, content_type)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert why in problem["detail"] and problem["errors"][0]["field"] == "document"
    assert _count(db) == before


def test_deeply_nested_xml_is_read_without_recursion(client, staff_headers):
    body = b"<rss><channel>" + b"<x>" * 100_000 + b"</x>" * 100_000 + b"</channel></rss>"
    response = _post(client, staff_headers("consul"), body, "application/rss+xml")
    assert response.status_code == 200, response.text  # no items: nothing to do
    assert response.json()["created"] == [] and response.json()["rejected"] == []


def _file_feed(tmp_path, name, document, format_name):
    path = tmp_path / name
    path.write_bytes(document)
    return Feed.model_validate({"name": name, "path": str(path), "format": format_name})


@pytest.mark.parametrize(("name", "document", "why"), REFUSED, ids=[r[0] for r in REFUSED])
def test_scheduled_poll_records_the_refusal(poll, db, tmp_path, name, document, why):
    format_name = "cap" if document.startswith(b"<") else "mofa"
    format_name = "geojson" if b"FeatureCollection" in document else format_name
    before = _count(db)
    feed = _file_feed(tmp_path, "hostile", document, format_name)
    assert poll(feed) == "error"
    state = db.get(FeedState, "hostile")
    assert state.last_outcome == "error" and why in state.last_detail
    assert _count(db) == before


def test_scheduled_poll_of_an_euc_kr_feed(poll, db, tmp_path):
    body = _cap("EUC-KR", "ko-KR", KOREAN_TITLE, codec="cp949")
    assert poll(_file_feed(tmp_path, "korean", body, "cap")) == "updated"
    assert db.get(FeedState, "korean").last_detail.startswith("created 1,")
    stored = db.scalars(select(Advisory).where(Advisory.issued_by == "feed:korean")).one()
    assert stored.title_ko == KOREAN_TITLE


def test_the_nested_row_is_valid_json():
    # The case above is refused by our depth limit, not by the JSON parser.
    assert json.loads(NESTED_ROW)["data"][0]["alarm_lvl"] == "2"
