"""The console's other actions in a real Chromium against the real service: drafts, rejection,
the advisory page (retry, reveal, cancel with an all-clear, test-send, live delivery counts),
the admin's feeds and audit views, and the keyboard."""

from playwright.sync_api import expect

from tests.advisories.builders import approve
from tests.dispatch.fake_twilio import Answer
from tests.web.test_console import _citizen_in_bangkok, _eventually, _log_in

REVEAL_REASON = "welfare check after the protest"


def _fill_issue_form(tab, title: str) -> None:
    tab.click("nav a[href='#/issue']")
    tab.fill("#f-title-ko", title)
    tab.fill("#f-message-ko", "시위 지역을 피하십시오.")
    tab.fill("#f-countries", "TH")
    expect(tab.get_by_test_id("preview-citizens")).to_have_text("1")


def _issue(live, key: str, title: str) -> str:
    """A level 3 advisory for Thailand through the API (it waits for approval); its id."""
    body = {
        "title": {"ko": title},
        "message": {"ko": "시위 지역을 피하십시오."},
        "level": 3,
        "category": "security",
        "area": {"countries": ["TH"]},
    }
    issued = live.http.post(
        f"{live.base}/v1/advisories", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert issued.status_code == 201, issued.text
    assert issued.json()["status"] == "pending_approval"
    return issued.json()["id"]


def test_a_draft_is_saved_submitted_and_rejected_with_a_reason(live, new_page):
    _citizen_in_bangkok(live)
    page = new_page()
    tab = page.tab
    _log_in(page, live, live.staff_key("consul", "kim"))
    tab.click("#lang")  # English
    _fill_issue_form(tab, "방콕 초안")
    # Level 3 always waits for a second person, also when a draft is submitted.
    tab.select_option("#f-level", "3")
    tab.click("#save-draft")
    expect(tab.locator("#issue-result [data-status]")).to_have_attribute("data-status", "draft")
    expect(tab.locator("#issue-result")).to_contain_text("draft")
    tab.locator("#issue-result a").click()
    expect(tab.locator("#advisory-status")).to_have_text("draft")
    tab.get_by_role("button", name="Submit for approval").click()
    expect(tab.locator("#advisory-status")).to_have_text("pending approval")
    expect(tab.get_by_role("button", name="Submit for approval")).to_have_count(0)
    advisory_id = tab.url.rsplit("/", 1)[-1]

    second = new_page()
    _log_in(second, live, live.staff_key("consul", "lee"))
    second.tab.click("#lang")
    second.tab.click("nav a[href='#/queue']")
    card = second.tab.locator(f".card[data-advisory='{advisory_id}']")
    expect(card).to_contain_text("kim")
    card.get_by_label("Reason").fill("the area is too wide")
    card.get_by_role("button", name="Reject").click()
    expect(card).to_contain_text("Rejected.")
    expect(second.tab.locator(f".card[data-advisory='{advisory_id}']")).to_have_count(0)

    tab.reload()
    expect(tab.locator("#advisory-status")).to_have_text("rejected")
    expect(tab.locator("#advisory-head")).to_contain_text("the area is too wide")
    expect(tab.get_by_role("button", name="Cancel (send an all-clear)")).to_have_count(0)


def test_the_advisory_page_retries_reveals_test_sends_and_cancels(live, new_page):
    phone = _citizen_in_bangkok(live)
    proposer, approver = live.staff_key("consul", "kim"), live.staff_key("consul", "lee")
    advisory_id = _issue(live, proposer, "방콕 시위")
    live.twilio.script(phone, Answer(400, code=21211))

    page = new_page()
    tab = page.tab
    _log_in(page, live, proposer)
    expect(tab.locator("nav a[href='#/audit']")).to_be_hidden()
    tab.click("#lang")  # English
    tab.goto(f"{live.base}/console/#/advisory/{advisory_id}")
    expect(tab.locator("#advisory-status")).to_have_text("pending approval")
    expect(tab.locator("#delivery")).to_have_text("None")
    tab.evaluate("window.notReloaded = true")

    # Approved elsewhere: the dispatcher sends, Twilio refuses, the counts follow on their own.
    approved = approve(
        live.http, advisory_id, {"Authorization": f"Bearer {approver}"}, base=live.base
    )
    assert approved.status_code == 200, approved.text
    expect(tab.locator("#delivery tr[data-status='failed'] td")).to_have_text("1", timeout=15_000)
    expect(tab.locator("#failed li")).to_contain_text("21211")
    tab.get_by_role("button", name="Retry").click()
    expect(tab.locator("#flash")).to_have_text("Queued again.")
    expect(tab.locator("#delivery tr[data-status='sent'] td")).to_have_text("1", timeout=15_000)
    expect(tab.locator("#delivery tr[data-status='failed']")).to_have_count(0)
    expect(tab.locator("#failed")).to_have_text("None")
    assert any("방콕" in body for body in live.twilio.bodies_to(phone))
    assert tab.evaluate("window.notReloaded") is True

    # Reveal a contact, with a reason asked by prompt().
    tab.on("dialog", lambda dialog: dialog.accept(REVEAL_REASON))
    expect(tab.locator("#rollcall tbody tr")).to_have_count(1)
    tab.get_by_role("button", name="Reveal contact").click()
    expect(tab.get_by_test_id("revealed-phone")).to_contain_text(phone)

    # Test-send to myself: only the staff phone gets it, marked [TEST].
    staff_phone = "+821099990001"
    tab.fill("#test-phone", staff_phone)
    tab.locator("#test-send-form").get_by_role("button", name="Send").click()
    expect(tab.locator("#test-send-result")).to_have_text("+82******0001: sent")  # masked
    texts = _eventually(lambda: live.twilio.bodies_to(staff_phone))
    assert texts[0].startswith("[TEST]"), texts

    # A roll call: its "are you safe?" asks are counted apart from the warning's alerts.
    tab.locator("#start-rollcall").click()
    asks = tab.locator("#delivery table[data-asks] tr[data-status='sent'] td")
    expect(asks).to_have_text("1", timeout=15_000)
    expect(tab.locator("#delivery h5")).to_have_text('"Are you safe?" asks sent on their own')

    # Cancel, confirmed by confirm(): the citizen gets an all-clear.
    told = len(live.twilio.bodies_to(phone))
    tab.get_by_role("button", name="Cancel (send an all-clear)").click()
    expect(tab.locator("#advisory-status")).to_have_text("cancelled")
    expect(tab.locator("#flash")).to_have_text("Cancelled.")
    expect(tab.get_by_role("button", name="Cancel (send an all-clear)")).to_have_count(0)
    _eventually(lambda: len(live.twilio.bodies_to(phone)) > told)
    # The all-clear's sends in a table of their own, not added to the warning's.
    expect(tab.locator("#delivery h4[data-change='cancelled']")).to_have_text(
        "All-clear (revision 2)", timeout=15_000
    )
    expect(tab.locator("#delivery h4[data-change='issued']")).to_have_text("Warning (revision 1)")
    for revision in (2, 1):
        table = f"#delivery table[data-revision='{revision}']:not([data-asks])"
        sent = tab.locator(f"{table} tr[data-status='sent'] td")
        expect(sent).to_have_text("1", timeout=15_000)
    assert "null" not in tab.inner_text("#delivery")  # a review saw "nullnull" under them

    # The admin sees the feeds and the audit log, with what was just done.
    admin = new_page()
    admin_key = live.staff_key("admin", "han")
    bearer = {"Authorization": f"Bearer {admin_key}"}
    listed = live.http.get(f"{live.base}/v1/feeds", headers=bearer)
    assert listed.status_code == 200, listed.text
    feeds = listed.json()["items"]
    _log_in(admin, live, admin_key)
    admin.tab.click("#lang")
    expect(admin.tab.locator("nav a[href='#/audit']")).to_be_visible()
    admin.tab.click("nav a[href='#/feeds']")
    expect(admin.tab.locator("#view-feeds")).to_be_visible()
    expect(admin.tab.locator("#feeds tr").first).to_contain_text("Feed")
    expect(admin.tab.locator("#feeds tr")).to_have_count(len(feeds) + 1)
    for feed in feeds:
        expect(admin.tab.locator("#feeds")).to_contain_text(feed["name"])
        row = admin.tab.locator(f"#feeds tr[data-feed='{feed['name']}']")
        if not feed["enabled"]:  # shipped off: said, not shown as "–" as if it had failed
            expect(row).to_contain_text("off (turn on with enabled = true in config/feeds.toml)")
    assert any(not feed["enabled"] for feed in feeds)  # the shipped ones are off
    admin.tab.click("nav a[href='#/audit']")
    audit = admin.tab.locator("#audit")
    expect(audit.locator("tr", has_text="reveal citizen")).to_contain_text(REVEAL_REASON)
    expect(audit.locator("tr", has_text="reveal citizen")).to_contain_text("kim (consul)")
    expect(audit.locator("tr", has_text="approve advisory")).to_contain_text("lee (consul)")
    expect(audit.locator("tr", has_text="issue advisory")).to_contain_text(advisory_id)


def test_the_audit_log_leaves_out_reads_until_asked_and_filters_and_pages(live, new_page):
    """An operator's review: a consul's open advisory page polls every 3 s, and within two
    minutes its reads filled the audit page's 100 rows, burying who approved and who
    cancelled. Reads are now left out unless asked for; the log filters and pages."""
    proposer, approver = live.staff_key("consul", "kim"), live.staff_key("consul", "lee")
    advisory_id = _issue(live, proposer, "방콕 시위")
    assert approve(live.http, advisory_id, {"Authorization": f"Bearer {approver}"}, base=live.base)
    polling = {"Authorization": f"Bearer {proposer}"}
    for _ in range(110):  # two minutes of an open advisory page
        assert live.http.get(f"{live.base}/v1/advisories/{advisory_id}", headers=polling)

    admin = new_page()
    _log_in(admin, live, live.staff_key("admin", "han"))
    tab = admin.tab
    tab.click("#lang")
    tab.click("nav a[href='#/audit']")
    audit = tab.locator("#audit")
    expect(audit.locator("tr", has_text="approve advisory")).to_contain_text("lee (consul)")
    expect(audit.locator("tr", has_text="GET /v1/advisories")).to_have_count(0)
    expect(tab.locator("#audit-older")).to_be_disabled()

    tab.get_by_label("Show reads (GET) too").check()
    expect(tab.locator("#audit-shown")).to_contain_text("1–100 /")
    expect(audit.locator("tr", has_text="approve advisory")).to_have_count(0)  # buried
    assert audit.locator("tr", has_text="GET /v1/advisories/{advisory_id}").count() >= 80
    tab.locator("#audit-older").click()
    expect(tab.locator("#audit-shown")).to_contain_text("101–")
    expect(audit.locator("tr", has_text="approve advisory")).to_have_count(1)  # older now

    tab.get_by_label("Who (key name)").fill("lee")
    tab.get_by_role("button", name="Find").click()
    expect(tab.locator("#audit-shown")).to_contain_text("1–")
    expect(audit.locator("tr", has_text="kim (consul)")).to_have_count(0)
    expect(audit.locator("tr", has_text="approve advisory")).to_contain_text("lee (consul)")


def test_the_proposer_sees_no_approve_the_approver_is_told_and_a_cancelled_page_asks_nobody(
    live, new_page
):
    """An operator's review: the proposer saw an Approve button that answered 403, the
    approved card vanished with no word, a cancelled advisory still offered a roll call the
    API refuses, and a viewer saw the help messages' heading over nothing, as if none."""
    _citizen_in_bangkok(live)
    proposer, approver = live.staff_key("consul", "kim"), live.staff_key("consul", "lee")
    advisory_id = _issue(live, proposer, "방콕 시위")

    mine = new_page()
    _log_in(mine, live, proposer)
    mine.tab.click("#lang")
    mine.tab.click("nav a[href='#/queue']")
    card = mine.tab.locator(f".card[data-advisory='{advisory_id}']")
    expect(card.get_by_test_id("own-proposal")).to_contain_text(
        "Your own proposal: someone else approves or rejects it"
    )
    expect(card.get_by_role("button", name="Approve")).to_have_count(0)
    expect(card.get_by_role("button", name="Reject")).to_have_count(0)  # a 403 too

    second = new_page()
    _log_in(second, live, approver)
    second.tab.click("#lang")
    second.tab.click("nav a[href='#/queue']")
    theirs = second.tab.locator(f".card[data-advisory='{advisory_id}']")
    theirs.get_by_role("button", name="Approve").click()
    expect(second.tab.locator("#flash")).to_have_text("Approved. 방콕 시위")
    expect(second.tab.locator(f".card[data-advisory='{advisory_id}']")).to_have_count(0)
    expect(second.tab.locator("#flash")).to_have_text("Approved. 방콕 시위")  # still said

    cancelled = live.http.post(
        f"{live.base}/v1/advisories/{advisory_id}/cancel",
        headers={"Authorization": f"Bearer {approver}"},
    )
    assert cancelled.status_code == 200, cancelled.text
    second.tab.goto(f"{live.base}/console/#/advisory/{advisory_id}")
    expect(second.tab.locator("#advisory-status")).to_have_text("cancelled")
    expect(second.tab.locator("#start-rollcall")).to_be_hidden()

    viewer = new_page()
    _log_in(viewer, live, live.staff_key("viewer", "park"))
    expect(viewer.tab.locator("#view-map")).to_be_visible()
    expect(viewer.tab.locator("#active-list")).to_be_attached()
    expect(viewer.tab.locator("h3[data-t='help_messages_heading']")).to_be_hidden()


def test_the_keyboard_logs_in_and_focus_is_visible(live, new_page):
    page = new_page()
    tab = page.tab
    tab.goto(live.base + "/console/")
    expect(tab.locator("#key")).to_be_focused()
    tab.keyboard.type(live.staff_key("consul", "yoon"))
    tab.keyboard.press("Tab")
    button = tab.locator("#login-form button[type='submit']")
    expect(button).to_be_focused()
    style = button.evaluate(
        "b => { const s = getComputedStyle(b); return [s.outlineStyle, s.boxShadow]; }"
    )
    assert style[0] != "none" or style[1] not in ("", "none"), style
    tab.keyboard.press("Enter")
    expect(tab.locator("#who")).to_contain_text("yoon")
    expect(tab.locator("#view-map")).to_be_visible()
