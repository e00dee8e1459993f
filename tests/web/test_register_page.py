"""The enrolment page (/register, issue #14) in a real Chromium against the real service: a
citizen enrols, types the codes the fake Twilio and the SMTP sink received, is active, edits
the record and erases it; bad input shows the API's own message beside its field."""

import re
import time
from datetime import date, timedelta

import httpx
import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from service.citizens.models import Citizen
from tests.builders import citizen_body

PHONE, PHONE_E164 = "010-2345-6789", "+821023456789"
EMAIL = "jisu.web@example.com"
_COUNT = select(func.count()).select_from(Citizen)


def code_in(text: str) -> str:
    return re.search(r"\b(\d{6})\b", text).group(1)


def eventually(read, limit_s: float = 15.0):
    """What read() returns once it is truthy: the codes reach the fakes after the request."""
    deadline = time.monotonic() + limit_s
    while not (found := read()):
        assert time.monotonic() < deadline, "nothing arrived"
        time.sleep(0.05)
    return found


def sms_code(live, to: str) -> str:
    return code_in(eventually(lambda: live.twilio.bodies_to(to))[-1])


def email_code(live, to: str) -> str:
    message = eventually(lambda: live.smtp.to(to))[-1]
    return code_in(message["Subject"])


def open_form(live, new_page, width: int = 1280):
    page = new_page(width=width)
    page.tab.goto(live.base + "/register")
    expect(page.tab.get_by_role("heading", name="Register your stay abroad")).to_be_visible()
    return page


def fill_form(tab, *, phone: str = PHONE, email: str = EMAIL, stay: tuple | None = None):
    form = tab.locator("#register-form")
    form.get_by_label("Name", exact=True).fill("Kim Jisu")
    form.get_by_label("Mobile phone").fill(phone)
    form.get_by_role("textbox", name="E-mail").fill(email)
    form.get_by_role("checkbox", name="E-mail").check()
    place = form.get_by_role("group", name="Where you are now")
    place.get_by_label("Country", exact=True).select_option("JP")
    if stay is not None:
        form.get_by_role("button", name="Add a trip").click()
        trip = form.get_by_role("group", name="Trip 1")
        trip.get_by_label("Country").select_option(stay[0])
        trip.get_by_label("From").fill(stay[1].isoformat())
        trip.get_by_label("To").fill(stay[2].isoformat())
    form.get_by_label("I have read this notice").check()


def expect_refusals(page, status: int, count: int) -> None:
    """Chromium logs every 4xx answer to fetch() as a console error. The refusals a scenario
    provokes on purpose are counted and taken out; any other error still fails the test."""
    line = f"Failed to load resource: the server responded with a status of {status} "
    refusals = [e for e in page.errors if e.startswith(line)]
    assert len(refusals) == count, page.errors
    for refusal in refusals:
        page.errors.remove(refusal)


def citizen(live, citizen_id: str, token: str) -> httpx.Response:
    return live.http.get(
        f"{live.base}/v1/citizens/{citizen_id}", headers={"Authorization": f"Bearer {token}"}
    )


def test_a_citizen_enrols_verifies_and_is_active(live, new_page):
    page = open_form(live, new_page)
    tab = page.tab
    soon = date.today() + timedelta(days=30)
    fill_form(tab, stay=("TH", soon, soon + timedelta(days=9)))
    page.shot("register-form")
    tab.get_by_role("button", name="Register", exact=True).click()

    expect(tab.get_by_role("heading", name="Enter your codes")).to_be_visible()
    # A number that once replied STOP gets no code, and nobody is told which: everyone reads how.
    expect(tab.get_by_text("If you ever replied STOP to our texts, text START")).to_be_visible()
    citizen_id, token = (
        tab.locator("#shown-id").inner_text(),
        tab.locator("#shown-token").inner_text(),
    )
    assert token.startswith("ajc_")
    expect(tab.locator("#verify-status")).to_contain_text("Not active yet")
    tab.get_by_label("SMS code").fill(sms_code(live, PHONE_E164))
    page.shot("register-verify")
    tab.get_by_label("SMS code").press("Enter")
    expect(tab.locator("#verify-status")).to_contain_text("Status: active")
    tab.get_by_label("E-mail code").fill(email_code(live, EMAIL))
    tab.get_by_label("E-mail code").press("Enter")
    expect(tab.get_by_role("status").filter(has_text="Verified.")).to_have_count(2)

    record = citizen(live, citizen_id, token).json()
    assert record["status"] == "active" and record["verified"] == ["sms", "email"]
    assert record["phone"] == PHONE_E164 and record["location"]["country"] == "JP"
    assert [s["country"] for s in record["stays"]] == ["TH"]
    assert record["quiet_hours"] == {"from": "22:00", "to": "07:00"}
    assert record["exercises"] is False
    # The token stays in this tab only.
    assert tab.evaluate("localStorage.length") == 0
    assert citizen_id in tab.evaluate("sessionStorage.getItem('anjeon.record')")


def test_bad_input_shows_the_apis_message_beside_its_field_and_creates_nothing(live, new_page):
    page = open_form(live, new_page)
    tab = page.tab
    later = date.today() + timedelta(days=40)
    fill_form(tab, phone="010-12ab", stay=("TH", later, later - timedelta(days=5)))
    tab.get_by_role("button", name="Register", exact=True).click()

    summary = tab.get_by_role("alert")
    expect(summary).to_contain_text("stays[0].to")
    expect(tab.locator("#err-stay-0-to")).to_have_text("'to' is before 'from'")
    trip = tab.get_by_role("group", name="Trip 1")
    expect(trip.get_by_label("To")).to_have_attribute("aria-invalid", "true")
    assert live.twilio.messages == [] and live.smtp.received == []

    # Dates mended: now the phone number is what the API refuses.
    trip.get_by_label("To").fill((later + timedelta(days=5)).isoformat())
    tab.get_by_role("button", name="Register", exact=True).click()
    expect(tab.locator("#err-stay-0-to")).to_be_hidden()
    expect(tab.locator("#err-phone")).not_to_be_empty()
    expect(summary).to_contain_text("phone")
    page.shot("register-errors")
    expect_refusals(page, 422, 2)
    assert live.twilio.messages == [] and live.smtp.received == []
    with live.session() as session:
        assert session.execute(_COUNT).scalar_one() == 0


def test_the_manage_page_edits_adds_a_trip_and_erases(live, new_page):
    page = open_form(live, new_page)
    tab = page.tab
    fill_form(tab, phone="010-3456-7890")
    tab.get_by_role("button", name="Register", exact=True).click()
    expect(tab.get_by_role("heading", name="Enter your codes")).to_be_visible()
    citizen_id, token = (
        tab.locator("#shown-id").inner_text(),
        tab.locator("#shown-token").inner_text(),
    )
    tab.get_by_label("SMS code").fill(sms_code(live, "+821034567890"))
    tab.get_by_role("button", name="Verify").first.click()
    expect(tab.locator("#verify-status")).to_contain_text("Status: active")

    tab.get_by_role("button", name="Manage my record").click()
    expect(tab.get_by_role("heading", name="Your record", exact=True)).to_be_visible()
    expect(tab.locator("#record-status")).to_have_text("active")
    # The token is shown once: not on the manage page.
    expect(tab.get_by_text(token)).to_have_count(0)

    edit = tab.locator("#edit-form")
    edit.get_by_label("Name").fill("Kim Ji-su")
    edit.get_by_label("Also receive drills").check()
    edit.get_by_role("button", name="Save").click()
    expect(tab.locator("#manage-message")).to_have_text("Saved.")
    trip = tab.locator("#trip-form")
    start = date.today() + timedelta(days=10)
    trip.get_by_label("Country").select_option("VN")
    trip.get_by_label("From").fill(start.isoformat())
    trip.get_by_label("To").fill((start + timedelta(days=3)).isoformat())
    trip.get_by_role("button", name="Add trip").click()
    expect(tab.locator("#manage-message")).to_have_text("Trip added.")
    expect(tab.locator("#record")).to_contain_text("Vietnam (VN)")
    page.shot("register-manage")

    record = citizen(live, citizen_id, token).json()
    assert record["name"] == "Kim Ji-su" and record["exercises"] is True
    assert [s["country"] for s in record["stays"]] == ["VN"]

    # Another tab opens the record with the id and the token.
    later = new_page()
    later.tab.goto(live.base + "/register")
    later.tab.get_by_role("button", name="Open your record").click()
    later.tab.get_by_label("Record id").fill(citizen_id)
    later.tab.get_by_label("Manage token").fill(token)
    later.tab.get_by_role("button", name="Open", exact=True).click()
    expect(later.tab.locator("#record")).to_contain_text("Kim Ji-su")

    tab.get_by_role("button", name="Erase my record").click()
    tab.get_by_role("button", name="Cancel").click()
    assert citizen(live, citizen_id, token).status_code == 200
    tab.get_by_role("button", name="Erase my record").click()
    tab.get_by_role("button", name="Yes, erase").click()
    expect(tab.get_by_role("heading", name="Your record is erased")).to_be_visible()
    assert citizen(live, citizen_id, token).status_code == 404
    assert tab.evaluate("sessionStorage.getItem('anjeon.record')") is None


def test_the_page_works_375_px_wide_and_in_korean(live, new_page):
    page = open_form(live, new_page, width=375)
    tab = page.tab
    tab.get_by_role("button", name="Add a trip").click()
    tab.get_by_label("By latitude and longitude").check()
    assert tab.evaluate("document.documentElement.scrollWidth") <= 375
    # In English: the test machines have no Korean font, so a Korean shot shows boxes.
    page.shot("register-mobile")
    tab.get_by_role("button", name="한국어").click()
    expect(tab.get_by_role("heading", name="해외 체류 등록")).to_be_visible()
    expect(tab.locator("#register-form").get_by_label("알림 언어")).to_have_value("ko")
    assert tab.evaluate("document.documentElement.lang") == "ko"
    assert tab.evaluate("document.documentElement.scrollWidth") <= 375

    # Sent empty: the API's refusals are said in Korean beside their fields, not in its
    # English ("String should have at least 1 character").
    tab.get_by_label("국가 고르기").check()
    tab.get_by_role("button", name="등록하기").click()
    expect(tab.locator("#err-name")).to_have_text(re.compile("^이름을 확인해 주세요"))
    expect(tab.locator("#err-consent")).to_contain_text("동의해야 등록할 수 있습니다")
    expect(tab.get_by_role("alert")).to_contain_text("입력한 내용을 확인해 주세요")
    assert "should" not in tab.locator("#register-form").inner_text()
    assert "should" not in tab.get_by_role("alert").inner_text()
    # Nor the API's JSON paths before the advice (a newcomer saw "location.country: …").
    summary = tab.get_by_role("alert").inner_text()
    assert "name:" not in summary and "consent:" not in summary, summary

    # The address is offered until the server says it looks up no addresses.
    tab.get_by_label("주소 입력").check()
    tab.get_by_label("주소", exact=True).fill("1-1 Chiyoda, Tokyo")
    form = tab.locator("#register-form")
    form.get_by_label("이름").fill("Lee")
    form.get_by_label("휴대전화 번호").fill("010-4567-8901")
    form.get_by_label("위 내용을 읽었으며").check()
    tab.get_by_role("button", name="등록하기").click()
    expect(tab.locator("#err-location")).to_contain_text("주소로 위치를 찾지 않습니다")
    expect(tab.get_by_label("주소 입력")).to_be_hidden()
    expect_refusals(page, 422, 2)
    assert tab.evaluate("document.documentElement.scrollWidth") <= 375


def click_map_centre(tab, map_id: str) -> tuple[float, float]:
    """Clicks the middle of a map once its outlines are drawn; the lat/lon it put in the inputs."""
    box = tab.locator(f"#{map_id}")
    expect(box.locator("path").first).to_be_attached()  # the outlines, from countries.geojson
    size = box.bounding_box()
    box.click(position={"x": size["width"] / 2, "y": size["height"] / 2})
    expect(box.locator(".leaflet-marker-icon")).to_be_visible()
    form = box.locator("xpath=ancestor::form")
    lat = float(form.get_by_role("textbox", name="Latitude").input_value())
    lon = float(form.get_by_role("textbox", name="Longitude").input_value())
    # The maps open on 20° N, 100° E; a pixel is about a third of a degree at that zoom.
    assert abs(lat - 20) < 1 and abs(lon - 100) < 1, (lat, lon)
    return lat, lon


def test_clicking_the_map_sets_the_current_place(live, new_page):
    page = open_form(live, new_page)
    tab = page.tab
    fill_form(tab, phone="010-5678-9012")
    tab.get_by_label("By latitude and longitude").check()
    lat, lon = click_map_centre(tab, "location-map")
    # Typing moves the marker too, and the keyboard user's inputs are the same fields.
    tab.locator("#register-form").get_by_role("textbox", name="Latitude").fill(str(lat))
    tab.get_by_role("button", name="Register", exact=True).click()
    expect(tab.get_by_role("heading", name="Enter your codes")).to_be_visible()
    citizen_id, token = (
        tab.locator("#shown-id").inner_text(),
        tab.locator("#shown-token").inner_text(),
    )
    place = citizen(live, citizen_id, token).json()["location"]
    assert abs(place["lat"] - lat) < 0.05 and abs(place["lon"] - lon) < 0.05, place


def test_the_manage_page_moves_the_current_place(live, new_page):
    page = open_form(live, new_page)
    tab = page.tab
    fill_form(tab, phone="010-6789-0123")
    tab.get_by_role("button", name="Register", exact=True).click()
    expect(tab.get_by_role("heading", name="Enter your codes")).to_be_visible()
    citizen_id, token = (
        tab.locator("#shown-id").inner_text(),
        tab.locator("#shown-token").inner_text(),
    )
    assert citizen(live, citizen_id, token).json()["location"]["country"] == "JP"
    tab.get_by_role("button", name="Manage my record").click()
    expect(tab.get_by_role("heading", name="Your record", exact=True)).to_be_visible()

    move = tab.locator("#move-form")
    move.get_by_label("A latitude and longitude").check()
    move.get_by_role("textbox", name="Latitude").fill("95")
    move.get_by_role("textbox", name="Longitude").fill("100")
    move.get_by_role("button", name="Save the place").click()
    expect(tab.locator("#err-move-lat")).to_contain_text("90")
    expect(move.get_by_role("textbox", name="Latitude")).to_have_attribute("aria-invalid", "true")
    expect_refusals(page, 422, 1)

    lat, lon = click_map_centre(tab, "move-map")
    move.get_by_role("button", name="Save the place").click()
    expect(tab.locator("#manage-message")).to_have_text("Your current place is changed.")
    expect(tab.locator("#err-move-lat")).to_be_empty()
    place = citizen(live, citizen_id, token).json()["location"]
    assert abs(place["lat"] - lat) < 0.05 and abs(place["lon"] - lon) < 0.05, place
    page.shot("register-move")

    move.get_by_label("A country").check()
    move.get_by_role("combobox", name="Country").select_option("FR")
    move.get_by_role("button", name="Save the place").click()
    expect(tab.locator("#record")).to_contain_text("France (FR)")
    assert citizen(live, citizen_id, token).json()["location"]["country"] == "FR"


@pytest.mark.live_settings(
    rate_limit_client="1/hour", rate_limit_resend="5/minute", registration_proof_max_number=50_000
)
def test_past_the_address_limit_the_page_proves_its_work_and_registers(live, new_page):
    """A hotel's Wi-Fi or a roaming carrier's NAT: the address has used its registrations. The
    page is told 429 with a challenge, solves it in the browser (WebCrypto), and registers; so
    too for a new code and a new phone."""
    first = live.http.post(f"{live.base}/v1/citizens", json=citizen_body(consent=True))
    assert first.status_code == 201, first.text
    with live.session() as session:
        before = session.scalar(_COUNT)
    page = open_form(live, new_page)
    tab = page.tab
    fill_form(tab)
    tab.get_by_role("button", name="Register", exact=True).click()

    expect(tab.get_by_role("heading", name="Enter your codes")).to_be_visible(timeout=30_000)
    expect_refusals(page, 429, 1)  # the first try, before the proof
    citizen_id, token = (
        tab.locator("#shown-id").inner_text(),
        tab.locator("#shown-token").inner_text(),
    )
    assert citizen(live, citizen_id, token).json()["phone"] == PHONE_E164
    with live.session() as session:
        assert session.scalar(_COUNT) == before + 1
    # The code did not come: a new one is asked for from the same crowded address, and the
    # page proves its work for that too.
    eventually(lambda: live.twilio.bodies_to(PHONE_E164))
    asked: list[str] = []
    tab.on("request", lambda r: asked.append(r.method) if "/verify/resend" in r.url else None)
    # A double click while the device proves its work asks once (the first try, then the
    # retry with the solution).
    tab.get_by_role("button", name="Send a new code").first.dblclick()
    expect(tab.get_by_text("A new code is on its way.")).to_be_visible(timeout=30_000)
    assert asked == ["POST", "POST"], asked
    expect_refusals(page, 429, 1)
    assert len(eventually(lambda: live.twilio.bodies_to(PHONE_E164)[1:])) == 1
    # And a new phone, from the manage page.
    tab.get_by_role("button", name="Manage my record").click()
    edit = tab.locator("#edit-form")
    edit.get_by_label("Mobile phone").fill("010-5555-0101")
    edit.get_by_role("button", name="Save").click()
    expect(tab.locator("#manage-message")).to_have_text("Saved.", timeout=30_000)
    expect_refusals(page, 429, 1)
    eventually(lambda: live.twilio.bodies_to("+821055550101"))
