"""Advisories with no end of their own (MOFA alarms, State Department levels) stood for ever
once their source dropped them from its list or lowered them below any advisory, and new
registrants there were still told. Staff now see them: GET /v1/feeds `unlisted` and
anjeon_feed_unlisted_advisories name the feed's advisories its last whole document did not
list, until staff end them. Nothing is ended by the service itself."""

from datetime import UTC, datetime

from sqlalchemy import select

from service.advisories import formats
from service.advisories.feeds.config import Feed
from service.advisories.models import Advisory, ExternalMessage, FeedState
from service.operations.figures import read_queue
from tests.advisories.feed_samples import current_cap, mofa_rows, sample

AFGHANISTAN = {"country_iso_alp2": "AF", "alarm_lvl": "4", "region_ty": "전체"}
JAPAN_PART = {"country_iso_alp2": "JP", "alarm_lvl": "2", "region_ty": "일부", "remark": "후쿠시마"}
THAILAND = {"country_iso_alp2": "TH", "alarm_lvl": "1", "region_ty": "전체"}


def _feed(path, name: str, format_name: str) -> Feed:
    return Feed.model_validate({"name": name, "path": str(path), "format": format_name})


def _advisory(db, identifier: str) -> Advisory:
    return db.scalar(
        select(Advisory)
        .join(ExternalMessage, ExternalMessage.advisory_id == Advisory.id)
        .where(ExternalMessage.identifier == identifier)
    )


def _unlisted(client, staff_headers, name: str) -> list[str]:
    page = client.get("/v1/feeds", headers=staff_headers("viewer")).json()
    return next(f for f in page["items"] if f["name"] == name)["unlisted"]


def _figure(db, name: str) -> int:
    figures = read_queue(db.connection(), now=datetime.now(UTC))
    return next(unlisted for feed, *_, unlisted in figures.feeds if feed == name)


def test_an_alarm_dropped_from_the_list_is_named_until_a_consul_ends_it(
    client, staff_headers, factory, poll, db, tmp_path
):
    path = tmp_path / "mofa.json"
    feed = _feed(path, "mofa", "mofa")
    client.app.state.feeds, client.app.state.session_factory = [feed], factory
    path.write_bytes(mofa_rows(AFGHANISTAN, JAPAN_PART, THAILAND))
    assert poll(feed) == "updated"
    assert _unlisted(client, staff_headers, "mofa") == [] and _figure(db, "mofa") == 0

    # MOFA lifts Afghanistan's alarm and Japan's part: both still stand, both are named.
    path.write_bytes(mofa_rows(THAILAND))
    assert poll(feed) == "updated"
    afghanistan, japan = _advisory(db, "AF:전체"), _advisory(db, "JP:일부:2")
    assert afghanistan.status == japan.status == "active"  # nothing ended by itself
    assert _unlisted(client, staff_headers, "mofa") == [afghanistan.public_id, japan.public_id]
    assert _figure(db, "mofa") == 2

    # A consul ends Afghanistan's: it drops out at once, without waiting for a poll.
    ended = client.post(
        f"/v1/advisories/{afghanistan.public_id}/cancel", headers=staff_headers("consul")
    )
    assert ended.status_code == 200, ended.text
    assert _unlisted(client, staff_headers, "mofa") == [japan.public_id]
    assert _figure(db, "mofa") == 1

    # Japan's part comes back on the list: nothing is unlisted any more.
    path.write_bytes(mofa_rows(JAPAN_PART, THAILAND))
    assert poll(feed) == "updated"
    assert _unlisted(client, staff_headers, "mofa") == [] and _figure(db, "mofa") == 0


def test_a_state_department_level_lowered_below_any_advisory_is_named(
    client, staff_headers, factory, poll, db, tmp_path
):
    document = sample("us-state-dept/travel-state-gov-TAsTWs-2025-10-07.xml.gz")
    path = tmp_path / "stdept.xml"
    feed = _feed(path, "stdept", "rss")
    client.app.state.feeds, client.app.state.session_factory = [feed], factory
    path.write_bytes(document)
    assert poll(feed) == "updated"
    maldives = _advisory(db, "MV")
    assert maldives.level == "1"  # their level 2 is our 1
    assert _unlisted(client, staff_headers, "stdept") == []

    # Lowered to their level 1, which makes no advisory: still listed, but not as an advisory.
    lowered = document.replace(
        b"Maldives - Level 2: Exercise Increased Caution",
        b"Maldives - Level 1: Exercise Normal Precautions",
    ).replace(
        b'<category domain="Threat-Level">Level 2: Exercise Increased Caution</category>\n'
        b'      <category domain="Country-Tag">MV</category>',
        b'<category domain="Threat-Level">Level 1: Exercise Normal Precautions</category>\n'
        b'      <category domain="Country-Tag">MV</category>',
    )
    assert lowered.count(b"Level 1: Exercise Normal Precautions") > document.count(
        b"Level 1: Exercise Normal Precautions"
    )
    path.write_bytes(lowered)
    assert poll(feed) == "updated"
    listed = {identifier for _, identifier in db.get(FeedState, "stdept").listed}
    assert "MV" not in listed and len(listed) > 50
    assert _unlisted(client, staff_headers, "stdept") == [maldives.public_id]
    assert _figure(db, "stdept") == 1


def test_one_page_of_several_names_nothing(client, staff_headers, factory, poll, db, tmp_path):
    path = tmp_path / "mofa.json"
    feed = _feed(path, "mofa-paged", "mofa")
    client.app.state.feeds, client.app.state.session_factory = [feed], factory
    path.write_bytes(mofa_rows(AFGHANISTAN, THAILAND))
    assert poll(feed) == "updated"
    # Page 1 of 2 (totalCount above its rows): Afghanistan may be on the other page.
    path.write_bytes(mofa_rows(THAILAND, total=2))
    assert poll(feed) == "updated"
    assert db.get(FeedState, "mofa-paged").listed is None
    assert _unlisted(client, staff_headers, "mofa-paged") == []
    assert _figure(db, "mofa-paged") == 0


def test_only_advisories_with_no_end_of_their_own_are_named(
    client, staff_headers, factory, poll, db, tmp_path
):
    # An advisory that ends by itself (a GDACS event, a CAP alert's expires) is not named when
    # its item leaves the document: it ends on its day.
    path = tmp_path / "mofa.json"
    feed = _feed(path, "mofa-dated", "mofa")
    client.app.state.feeds, client.app.state.session_factory = [feed], factory
    path.write_bytes(mofa_rows(AFGHANISTAN, THAILAND))
    assert poll(feed) == "updated"
    _advisory(db, "AF:전체").expires = datetime(2099, 1, 1, tzinfo=UTC)
    db.flush()
    path.write_bytes(mofa_rows(THAILAND))
    assert poll(feed) == "updated"
    assert _unlisted(client, staff_headers, "mofa-dated") == []
    assert _figure(db, "mofa-dated") == 0


def test_a_cap_alert_is_one_alert_not_a_list_of_what_stands(db):
    # A review: each new alert of a CAP feed named every earlier one without <expires> for
    # cancelling, while they still stood.
    parsed = formats.parse("cap", current_cap(), max_vertices=50_000)
    assert parsed.drafts and parsed.listed() is None
    whole = formats.parse("mofa", mofa_rows(THAILAND, total="1.0"), max_vertices=50_000)
    assert whole.listed() is not None  # the API writes its counts as text, "1.0" too
    paged = formats.parse("mofa", mofa_rows(THAILAND, total="2.0"), max_vertices=50_000)
    assert paged.listed() is None


def test_a_failing_feeds_stand_ins_are_not_named(
    client, staff_headers, factory, poll, db, tmp_path
):
    """A review: staff imported Afghanistan's alarm by hand in the stead of a feed that was
    down (?feed=), and the feed's old list named it for cancelling."""
    path = tmp_path / "mofa.json"
    feed = _feed(path, "mofa-down", "mofa")
    client.app.state.feeds, client.app.state.session_factory = [feed], factory
    path.write_bytes(mofa_rows(THAILAND))
    assert poll(feed) == "updated"
    path.unlink()  # the feed is down
    assert poll(feed) == "error"
    imported = client.post(
        "/v1/advisories/import?format=mofa&feed=mofa-down",
        content=mofa_rows(AFGHANISTAN),
        headers={**staff_headers("consul"), "content-type": "application/json"},
    )
    assert imported.status_code == 201, imported.text
    assert _unlisted(client, staff_headers, "mofa-down") == []
    assert _figure(db, "mofa-down") == 0
