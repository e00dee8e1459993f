"""The console's feeds page in a real Chromium: a feed whose document has not changed past its
stale_after_s says so, ahead of its last outcome."""

from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from service.advisories.models import FeedState
from service.db import utcnow
from tests.advisories.feed_samples import mofa_rows
from tests.web.test_console import _eventually, _log_in

FEEDS_FILE = Path(__file__).parent / "feeds-stale.toml"


def _polled(live) -> bool:
    with live.session() as session:  # a new one each time: SQLite reads keep their snapshot
        return session.get(FeedState, "frozen-upstream") is not None


def _feeds_page(live, new_page, key: str):
    page = new_page()
    _log_in(page, live, key)
    page.tab.click("#lang")  # English
    page.tab.click("nav a[href='#/feeds']")
    return page


@pytest.mark.live_settings(feeds_file=str(FEEDS_FILE))
def test_a_stale_feed_says_so_on_the_feeds_page(live, new_page):
    # The scheduler polls the feed at start (it fails: nobody answers; the next poll is an hour
    # away); then its polls are made to succeed with a document three hours old, as if every
    # poll since had brought the same one.
    _eventually(lambda: _polled(live))
    with live.session() as session:
        changed = utcnow() - timedelta(hours=3)
        session.execute(
            update(FeedState)
            .where(FeedState.name == "frozen-upstream")
            .values(
                changed_at=changed,
                content_hash="0" * 64,
                last_outcome="not-modified",
                last_detail=None,
                last_success_at=utcnow(),
            )
        )
        session.commit()
    key = live.staff_key("admin", "han")
    listed = live.http.get(f"{live.base}/v1/feeds", headers={"Authorization": f"Bearer {key}"})
    [feed] = listed.json()["items"]
    assert feed["stale"] is True and feed["last_outcome"] == "not-modified", feed

    page = _feeds_page(live, new_page, key)
    row = page.tab.locator("#feeds tr[data-feed='frozen-upstream']")
    expect(row).to_contain_text("Stale: its document has not changed since")
    expect(row).to_contain_text("not-modified")

    # Its document changes again: the page no longer says stale.
    with live.session() as session:
        session.execute(
            update(FeedState).where(FeedState.name == "frozen-upstream").values(changed_at=utcnow())
        )
        session.commit()
    page.tab.click("nav a[href='#/audit']")
    page.tab.click("nav a[href='#/feeds']")
    expect(row).to_contain_text("not-modified")
    expect(row).not_to_contain_text("Stale")


@pytest.mark.live_settings(feeds_file=str(FEEDS_FILE))
def test_an_advisory_the_feed_no_longer_lists_is_linked_on_the_feeds_page(live, new_page):
    _eventually(lambda: _polled(live))
    key = live.staff_key("consul", "kim")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    # A consul imports the feed's document by hand (the feed is down): Afghanistan, level 4.
    document = mofa_rows({"country_iso_alp2": "AF", "alarm_lvl": "4", "region_ty": "전체"})
    imported = live.http.post(
        f"{live.base}/v1/advisories/import?format=mofa&feed=frozen-upstream",
        content=document,
        headers=headers,
    )
    assert imported.status_code == 201, imported.text
    [advisory_id] = imported.json()["created"]
    # The feed is back, and its last whole document listed nothing: its source no longer says
    # Afghanistan.
    with live.session() as session:
        session.execute(
            update(FeedState)
            .where(FeedState.name == "frozen-upstream")
            .values(listed=[], last_outcome="updated")
        )
        session.commit()
    listed = live.http.get(f"{live.base}/v1/feeds", headers=headers)
    assert listed.json()["items"][0]["unlisted"] == [advisory_id]

    page = _feeds_page(live, new_page, key)
    row_shown = page.tab.locator("#feeds tr[data-feed='frozen-upstream'] [data-unlisted='1']")
    expect(row_shown).to_contain_text("Advisories its source no longer lists")
    row_shown.locator("a").click()
    expect(page.tab.locator("body")).to_contain_text("Afghanistan")
