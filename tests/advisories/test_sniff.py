"""Formats told from the content: `anjeon ingest FILE` without --format gives what --format gives
for every sample, imports with a generic content type are sniffed, and what is none of the
formats gets a clear error."""

import re
import shutil

import pytest

from service import cli
from service.advisories.formats import sniff_format
from service.advisories.formats.safe_xml import InvalidDocument, UnreadableDocument
from service.config import get_settings
from service.migrate import upgrade
from tests.advisories.feed_samples import FEEDS, mofa_envelope, sample
from tests.conftest import TEST_SECRET

FORMAT_BY_FOLDER = {
    "cap": "cap",
    "cap-update-cancel": "cap",
    "gdacs": "rss",
    "us-state-dept": "rss",
    "usgs": "geojson",
    "nws": "geojson",
}
# The seed-derived MOFA fixture is no API response; mofa_envelope() rebuilds the response.
SAMPLES = sorted(
    str(path.relative_to(FEEDS))
    for path in FEEDS.rglob("*")
    if path.is_file() and path.parent.name in FORMAT_BY_FOLDER
)
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_every_sample_folder_is_covered():
    folders = {p.name for p in FEEDS.iterdir() if p.is_dir()}
    assert folders == {*FORMAT_BY_FOLDER, "kr-mofa"}
    assert len(SAMPLES) == 19


@pytest.mark.parametrize("relative", SAMPLES)
def test_each_sample_is_sniffed_as_its_format(relative):
    assert sniff_format(sample(relative)) == FORMAT_BY_FOLDER[relative.split("/")[0]]


def test_mofa_envelope_is_sniffed_as_mofa():
    assert sniff_format(mofa_envelope()) == "mofa"
    assert sniff_format(b'{"resultCode": "00", "resultMsg": "NORMAL SERVICE.", "data": []}') == (
        "mofa"
    )


@pytest.mark.parametrize(
    ("document", "seen"),
    [
        (b"", "neither XML nor JSON"),
        (b"Herat earthquake, level 4", "neither XML nor JSON"),
        (b'<feed xmlns="http://www.w3.org/2005/Atom"><title/></feed>', "<feed> in namespace"),
        (b"<alert><identifier>x</identifier></alert>", "root <alert>,"),  # no CAP namespace
        (b'<alert xmlns="urn:oasis:names:tc:emergency:cap:2.0"/>', "<alert> in namespace"),
        (b'{"type": "Feature", "geometry": null, "properties": {}}', "neither a GeoJSON"),
        (b"[1, 2, 3]", "neither a GeoJSON"),
    ],
)
def test_what_is_no_known_format_is_named_in_the_error(document, seen):
    with pytest.raises(InvalidDocument, match="cannot tell the document's format") as raised:
        sniff_format(document)
    assert seen in raised.value.detail
    assert raised.value.errors[0].field == "document"


def test_sniffing_refuses_hostile_xml_as_the_parser_does():
    with pytest.raises(UnreadableDocument, match="refused"):
        sniff_format(b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY b "c">]><rss>&b;</rss>')


def test_a_utf16_cap_alert_is_sniffed():
    text = sample("cap/oasis-cap12-appendixA2-thunderstorm-polygon.xml").decode()
    data = re.sub(r'encoding\s*=\s*"UTF-8"', 'encoding="UTF-16"', text).encode("utf-16")
    assert sniff_format(data) == "cap"


# --- the real CLI, each run on its own fresh SQLite database -------------------------------


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def ingest(migrated, tmp_path, monkeypatch, capsys):
    """ingest(*args) -> (exit code, stdout lines with ids masked, stderr), each call on a
    fresh copy of a migrated database."""
    monkeypatch.setenv("ANJEON_SECRET_KEY", TEST_SECRET)
    runs = iter(range(1000))

    def run(*args):
        database = tmp_path / f"run{next(runs)}.db"
        shutil.copy(migrated, database)
        monkeypatch.setenv("ANJEON_DATABASE_URL", f"sqlite:///{database}")
        get_settings.cache_clear()
        code = cli.main(["ingest", *args, "--as-of", "2000-01-01T00:00:00Z"])
        out, err = capsys.readouterr()
        return code, _ID.sub("<id>", out).splitlines(), err

    yield run
    get_settings.cache_clear()


@pytest.mark.parametrize("relative", SAMPLES)
def test_cli_ingests_each_sample_with_and_without_format(ingest, relative):
    path = str(FEEDS / relative)
    code, named, _ = ingest(path, "--format", FORMAT_BY_FOLDER[relative.split("/")[0]])
    assert code == 0
    assert ingest(path) == (0, named, "")
    assert named[0].startswith("created ") and len(named) >= 2  # counts, then one line per item


def test_cli_ingests_the_mofa_envelope_without_format(ingest, tmp_path):
    path = tmp_path / "getTravelAlarmList2.json"
    path.write_bytes(mofa_envelope())
    code, named, _ = ingest(str(path), "--format", "mofa")
    assert code == 0 and named[0].startswith("created 139,")
    assert ingest(str(path)) == (0, named, "")


def test_cli_names_an_unrecognised_document(ingest, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a feed")
    code, out, err = ingest(str(path))
    assert code == 2 and out == []
    assert "cannot tell the document's format" in err and "neither XML nor JSON" in err


def test_cli_format_overrides_sniffing(ingest):
    # A GeoJSON document named as MOFA is parsed as MOFA, and refused as such.
    code, _, err = ingest(
        str(FEEDS / "usgs" / "usgs-significant_month-2023-10-11.geojson"), "--format", "mofa"
    )
    assert code == 2 and "getTravelAlarmList2" in err


# --- POST /v1/advisories/import with a generic content type ---------------------------------


@pytest.mark.parametrize(
    ("relative", "content_type"),
    [
        ("cap/oasis-cap12-appendixA1-hsas-nationwide.xml", "application/xml"),
        ("cap/au-nsw-rfs-fire-circles.cap", "text/xml; charset=utf-8"),
        ("usgs/usgs-significant_month-2023-10-11.geojson", "application/octet-stream"),
        ("nws/nws-api-alerts-active-zone-ORZ004-2019-12-20.json", "application/json"),
        ("gdacs/gdacs-rss-2019-12-30-4items.xml", None),
    ],
)
def test_import_with_a_generic_content_type_is_sniffed(
    client, staff_headers, relative, content_type
):
    headers = staff_headers("consul")
    if content_type:
        headers["content-type"] = content_type
    response = client.post("/v1/advisories/import", content=sample(relative), headers=headers)
    assert response.status_code in (200, 201), response.text
    body = response.json()
    # Every sample is long over: each item is reported, none was read in a wrong format.
    assert len(body["skipped"]) + len(body["created"]) + len(body["rejected"]) >= 1
    assert all("cannot tell" not in r["reason"] for r in body["rejected"])
    if relative.startswith("usgs"):
        assert len(body["skipped"]) == 18


def test_import_of_an_unrecognised_document_is_422_naming_the_document(client, staff_headers):
    response = client.post(
        "/v1/advisories/import",
        content=b'{"hello": "world"}',
        headers={**staff_headers("consul"), "content-type": "application/octet-stream"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "document"
    assert "cannot tell the document's format" in response.json()["detail"]


def test_mofa_envelope_posted_as_json_is_imported(client, staff_headers):
    response = client.post(
        "/v1/advisories/import",
        content=mofa_envelope(),
        headers={**staff_headers("consul"), "content-type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert len(response.json()["created"]) == 139


def test_cli_feed_names_a_configured_feed_whose_document_it_is(ingest):
    path = str(FEEDS / "gdacs" / "gdacs-rss-2019-12-30-4items.xml")
    code, out, err = ingest(path, "--feed", "nosuch")
    assert code == 2 and out == [] and "--feed: no feed named 'nosuch'" in err
    code, named, _ = ingest(path, "--feed", "gdacs")  # in config/feeds.toml
    assert code == 0 and named[0].startswith("created ")
