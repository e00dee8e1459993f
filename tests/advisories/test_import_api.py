"""POST /v1/advisories/import: formats by content type, idempotency, and hostile documents."""

import http.server
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.advisories.models import Advisory, ExternalMessage
from service.dispatch.recipients import ContentCache
from tests.advisories.feed_samples import sample
from tests.loopback_server import serve_in_thread

CAP = "application/cap+xml"


def _future_thunderstorm() -> bytes:
    """Appendix A.2 moved to tomorrow, so that it is current."""
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    return sample("cap/oasis-cap12-appendixA2-thunderstorm-polygon.xml").replace(
        b"2003-06-17", tomorrow.encode()
    )


def _count(db):
    return db.scalar(select(func.count()).select_from(Advisory)), db.scalar(
        select(func.count()).select_from(ExternalMessage)
    )


@pytest.fixture
def consul(staff_headers):
    return staff_headers("consul")


def _post(client, headers, body, content_type=CAP, **params):
    return client.post(
        "/v1/advisories/import",
        content=body,
        params=params,
        headers={**headers, "content-type": content_type},
    )


def test_cap_import_then_reimport_is_200_with_the_same_advisory(client, consul):
    first = _post(client, consul, _future_thunderstorm())
    assert first.status_code == 201, first.text
    created = first.json()
    assert len(created["created"]) == 1 and created["advisories"][0]["source"] == "cap"
    second = _post(client, consul, _future_thunderstorm())
    assert second.status_code == 200
    assert second.json()["created"] == [] and second.json()["updated"] == []
    assert second.json()["advisories"][0]["id"] == created["created"][0]
    assert second.json()["advisories"][0]["revision"] == 1


def test_viewer_cannot_import(client, staff_headers):
    assert _post(client, staff_headers("viewer"), _future_thunderstorm()).status_code == 403


def test_unknown_content_type_is_422(client, consul):
    response = _post(client, consul, b"{}", content_type="text/plain")
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "content-type"


def test_cap_without_identifier_is_422_and_stores_nothing(client, consul, db):
    before = _count(db)
    body = _future_thunderstorm().replace(b"<identifier>KSTO1055887203</identifier>", b"")
    response = _post(client, consul, body)
    assert response.status_code == 422 and "identifier" in response.json()["detail"]
    assert _count(db) == before


def test_cancel_of_an_unknown_alert_is_422_and_stores_nothing(client, consul, db):
    before = _count(db)
    response = _post(client, consul, sample("cap-update-cancel/ipaws-nv-dps-cancel.xml"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["message"] == "cancels no advisory known here"
    assert _count(db) == before


def test_expired_alert_is_answered_without_creating_anything(client, consul, db):
    before = _count(db)
    response = _post(client, consul, sample("cap/oasis-cap12-appendixA2-thunderstorm-polygon.xml"))
    assert response.status_code == 200
    assert "already expired" in response.json()["skipped"][0]["reason"]
    assert _count(db) == before


def test_geojson_and_query_format(client, consul):
    response = _post(
        client,
        consul,
        sample("usgs/usgs-significant_month-2023-10-11.geojson"),
        content_type="application/octet-stream",
        format="geojson",
    )
    assert response.status_code == 200  # all 18 events are long over
    assert len(response.json()["skipped"]) == 18


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&lol9;</identifier></alert>"""


def _quadratic_blowup() -> bytes:
    entity = "A" * 100_000
    return (
        f'<?xml version="1.0"?><!DOCTYPE kaboom [<!ENTITY a "{entity}">]>'
        f'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>{"&a;" * 50}'
        "</identifier></alert>"
    ).encode()


def _external_entity(target: str) -> bytes:
    return (
        f'<?xml version="1.0"?><!DOCTYPE alert [<!ENTITY xxe SYSTEM "{target}">]>'
        '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&xxe;</identifier>'
        "<sender>x</sender></alert>"
    ).encode()


class _Canary(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"canary")

    def log_message(self, *args):
        pass


@pytest.fixture
def canary():
    _Canary.hits = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Canary)
    serve_in_thread(server)
    yield server
    server.shutdown()


@pytest.mark.parametrize(
    ("name", "document"),
    [
        ("billion laughs", BILLION_LAUGHS),
        ("quadratic blowup", _quadratic_blowup()),
        ("external entity to a file", _external_entity("file:///etc/passwd")),
        (
            "rss with a doctype",
            b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x "y">]><rss><channel/></rss>',
        ),
    ],
)
def test_hostile_documents_are_400_fast_and_leave_nothing(client, consul, db, name, document):
    before = _count(db)
    content_type = "application/rss+xml" if b"<rss" in document else CAP
    response = _post(client, consul, document, content_type=content_type)
    assert response.status_code == 400, response.text
    assert "refused" in response.json()["detail"]
    assert "root:" not in response.text
    assert _count(db) == before


def test_external_entity_to_a_loopback_server_is_never_fetched(client, consul, db, canary):
    url = f"http://127.0.0.1:{canary.server_address[1]}/canary"
    response = _post(client, consul, _external_entity(url))
    assert response.status_code == 400
    assert _Canary.hits == 0
    urllib.request.urlopen(url, timeout=5).read()  # the canary does count a real fetch
    assert _Canary.hits == 1


def test_an_identical_cap_update_is_no_change_and_keeps_severity_and_urgency(client, consul, db):
    """An Update that repeats the advisory (severity and urgency included) makes no revision and
    alerts nobody again; one that changes the urgency is a revision."""
    first = _post(client, consul, _future_thunderstorm())
    assert first.status_code == 201, first.text
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    reference = (
        f"<references>KSTO@NWS.NOAA.GOV,KSTO1055887203,{tomorrow}T14:57:00-07:00</references>"
    )

    def update(identifier: str, urgency: bytes = b"Immediate") -> bytes:
        return (
            _future_thunderstorm()
            .replace(b"KSTO1055887203</identifier>", identifier.encode() + b"</identifier>")
            .replace(b"<msgType>Alert</msgType>", b"<msgType>Update</msgType>")
            .replace(b"<scope>Public</scope>", b"<scope>Public</scope>" + reference.encode())
            .replace(b"<urgency>Immediate</urgency>", b"<urgency>" + urgency + b"</urgency>")
        )

    same = _post(client, consul, update("KSTO1055887204"))
    assert same.status_code in (200, 201), same.text
    assert same.json()["updated"] == [] and same.json()["advisories"][0]["revision"] == 1
    changed = _post(client, consul, update("KSTO1055887205", b"Expected"))
    assert changed.json()["advisories"][0]["revision"] == 2, changed.text
    advisory = db.scalar(select(Advisory))
    db.refresh(advisory)
    assert [r.content.get("urgency") for r in advisory.revisions] == ["Immediate", "Expected"]


EXAMPLE_CAP = Path(__file__).parents[2] / "examples" / "tokyo-earthquake.cap.xml"


def _example_update(identifier: str, korean_area: str = "도쿄 도심 반경 50 km") -> bytes:
    """An Update of the walkthrough's bilingual alert, repeating it unless told otherwise."""
    text = EXAMPLE_CAP.read_text(encoding="utf-8")
    reference = (
        "examples@anjeon.invalid,anjeon-example-tokyo-earthquake-1,2026-12-01T09:00:00+09:00"
    )
    return (
        text.replace("tokyo-earthquake-1</identifier>", f"{identifier}</identifier>")
        .replace("<msgType>Alert</msgType>", "<msgType>Update</msgType>")
        .replace(
            "<scope>Public</scope>", f"<scope>Public</scope><references>{reference}</references>"
        )
        .replace("도쿄 도심 반경 50 km", korean_area)
        .encode()
    )


@pytest.mark.parametrize("stored", ["now", "before_korean_areas", "korean_same_as_english"])
def test_an_unchanged_bilingual_update_is_no_change(client, consul, db, stored):
    """The Korean <areaDesc> is kept beside the English one. An advisory stored before that has
    none; an unchanged Update of it must still be no change (a revision alerts everyone again).
    Since then, a change of the Korean words alone is a change, even from words the same as the
    English ones."""
    original = EXAMPLE_CAP.read_bytes()
    if stored == "korean_same_as_english":
        original = original.replace("도쿄 도심 반경 50 km".encode(), b"50 km around central Tokyo")
    first = _post(client, consul, original)
    assert first.status_code == 201, first.text
    advisory = db.scalar(select(Advisory))
    assert "description_ko" in advisory.area
    if stored == "before_korean_areas":
        advisory.area = {k: v for k, v in advisory.area.items() if k != "description_ko"}
        [revision] = advisory.revisions
        content = dict(revision.content)
        content["area"] = {k: v for k, v in content["area"].items() if k != "description_ko"}
        revision.content = content
        db.flush()

    if stored != "korean_same_as_english":
        same = _post(client, consul, _example_update("tokyo-earthquake-2"))
        assert same.status_code in (200, 201), same.text
        assert same.json()["updated"] == [] and same.json()["advisories"][0]["revision"] == 1

    changed = _post(client, consul, _example_update("tokyo-earthquake-3", "도쿄 도심 반경 60 km"))
    assert changed.json()["advisories"][0]["revision"] == (
        1 if stored == "before_korean_areas" else 2
    )


def test_an_imported_alert_names_no_staff_key_and_a_feeds_names_the_feed(client, consul, db):
    """A CAP document imported by a consul showed their key's name ("(you)") on its public
    page: the key's name is for the audit log. A feed's alerts still name the feed."""
    created = _post(client, consul, _future_thunderstorm())
    assert created.status_code == 201, created.text
    advisory = db.scalar(select(Advisory).where(Advisory.public_id == created.json()["created"][0]))
    assert advisory.issued_by.startswith("consul-")  # the key's name, kept for the audit
    key = (advisory.id, advisory.revision)
    assert ContentCache().load(db, {key})[key].source == ""
    advisory.issued_by = "feed:USGS"
    db.commit()
    assert ContentCache().load(db, {key})[key].source == "USGS"
