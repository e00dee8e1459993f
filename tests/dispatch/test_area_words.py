"""The area's words in each citizen's language, end to end on both backends: a bilingual CAP
alert's Korean <areaDesc> for Korean citizens, and never Korean words in an English SMS (a MOFA
row names its area only in Korean)."""

import json
from datetime import date
from pathlib import Path

import pytest

from service.advisories.formats import parse
from service.dispatch import sms_text
from service.dispatch.content import area_text
from tests.advisories.builders import advisory_body
from tests.builders import register

EXAMPLE_CAP = Path(__file__).parents[2] / "examples" / "tokyo-earthquake.cap.xml"
TOKYO = {"lat": 35.68, "lon": 139.69}


def _import(api, consul, body: bytes, content_type: str, **params):
    response = api.post(
        "/v1/advisories/import",
        content=body,
        params=params,
        headers={**consul, "content-type": content_type},
    )
    assert response.status_code == 201, response.text
    return response.json()["advisories"][0]


def test_bilingual_cap_gives_each_language_its_own_area_words(api, consul, dispatcher, twilio, db):
    register(api, location=TOKYO, phone="010-5555-0101", channels=["sms"])
    register(api, location=TOKYO, phone="010-5555-0102", channels=["sms"], language="en")

    advisory = _import(api, consul, EXAMPLE_CAP.read_bytes(), "application/cap+xml")
    assert advisory["area"]["description"] == "50 km around central Tokyo"
    assert advisory["area"]["description_ko"] == "도쿄 도심 반경 50 km"
    assert dispatcher.drain().by_status == {"sent": 2}

    [korean] = twilio.bodies_to("+821055550101")
    assert "(도쿄 도심 반경 50 km)" in korean and "central Tokyo)" not in korean
    [english] = twilio.bodies_to("+821055550102")
    assert "(50 km around central Tokyo)" in english and sms_text.is_gsm7(english)


def _mofa_row(level: str) -> bytes:
    row = {
        "country_iso_alp2": "JP",
        "alarm_lvl": level,
        "region_ty": "전체",
        "remark": "",
        "country_nm": "일본",
        "country_eng_nm": "Japan",
        "written_dt": date.today().isoformat(),
    }
    return json.dumps({"resultCode": "00", "data": [row]}, ensure_ascii=False).encode()


def test_mofa_english_sms_names_the_country_in_english_and_stays_gsm7(
    api, consul, dispatcher, twilio
):
    register(api, location=TOKYO, phone="010-5555-0103", channels=["sms"])
    register(api, location=TOKYO, phone="010-5555-0104", channels=["sms"], language="en")

    advisory = _import(api, consul, _mofa_row("1"), "application/json", format="mofa")
    assert advisory["area"]["description"] == "일본 전체"  # the stored record is as it was
    assert dispatcher.drain().by_status == {"sent": 2}

    [korean] = twilio.bodies_to("+821055550103")
    assert "(일본 전체)" in korean
    [english] = twilio.bodies_to("+821055550104")
    # Before: "(일본 전체)" made it a UCS-2 message, 70 characters a segment.
    assert "(Japan)" in english and sms_text.is_gsm7(english)


@pytest.mark.parametrize(
    ("area", "lang", "expected"),
    [
        ({"description": "Coastal waters", "description_ko": "연안"}, "ko", "연안"),
        ({"description": "Coastal waters", "description_ko": "연안"}, "en", "Coastal waters"),
        ({"description": "Île-de-France"}, "en", "Île-de-France"),  # Latin letters are read
        ({"description": "Hà Nội", "countries": ["VN"]}, "en", "Hà Nội"),
        ({"description": "Oʻahu", "countries": ["US"]}, "en", "Oʻahu"),  # ʻ: a modifier letter
        ({"description": "Москва", "countries": ["RU"]}, "en", "Russian Federation"),
        # The Korean block gave no words: the English ones.
        ({"description": "Coastal waters", "description_ko": ""}, "ko", "Coastal waters"),
        ({"description": "東京都", "countries": ["JP"]}, "en", "Japan"),
        ({"description": "東京都", "countries": ["JP"]}, "ko", "東京都"),
        # Nothing to name it by: the words as given beat an empty pair of brackets.
        ({"description": "서해 먼바다", "zones": ["KMA:S1"]}, "en", "서해 먼바다"),
        ({"countries": ["TH"]}, "ko", "태국"),
    ],
)
def test_area_text_picks_words_the_reader_can_read(area, lang, expected):
    assert area_text(area, lang) == expected


def test_a_long_area_description_still_names_its_country():
    """The country is read from all the <areaDesc> words; only the stored text is cut."""
    document = (
        EXAMPLE_CAP.read_text(encoding="utf-8")
        .replace("<circle>35.68,139.69 50</circle>", "")
        .replace("50 km around central Tokyo", "Kanto plain, " * 90 + "Japan")
    )
    (draft,) = parse("cap", document.encode()).drafts
    assert draft.area.countries == ("JP",) and len(draft.area.description) == 1000


def test_staff_name_the_area_in_each_language(api, consul, dispatcher, twilio):
    """A staff advisory's area named by staff: each citizen reads its name in their language
    (before, every staff-drawn shape was "(지정 구역)" / "(the marked area)")."""
    register(api, location=TOKYO, phone="010-5555-0105", channels=["sms"])
    register(api, location=TOKYO, phone="010-5555-0106", channels=["sms"], language="en")
    area = {
        "circles": [{"lat": 35.68, "lon": 139.69, "radius_km": 20}],
        "name": {"ko": "도쿄 도심", "en": "central Tokyo"},
    }
    created = api.post("/v1/advisories", json=advisory_body(area=area), headers=consul)
    assert created.status_code == 201, created.text
    assert created.json()["area"]["description_ko"] == "도쿄 도심"
    assert dispatcher.drain().by_status == {"sent": 2}
    [korean] = twilio.bodies_to("+821055550105")
    assert "(도쿄 도심)" in korean
    [english] = twilio.bodies_to("+821055550106")
    assert "(central Tokyo)" in english and sms_text.is_gsm7(english)

    # Renamed in Korean only: a revision, and the English reader gets no Korean words.
    area["name"] = {"ko": "도쿄 도심부"}
    patched = api.patch(
        f"/v1/advisories/{created.json()['id']}", json={"area": area}, headers=consul
    )
    assert patched.status_code == 200 and patched.json()["revision"] == 2
    assert dispatcher.drain().by_status == {"sent": 2}
    assert "(도쿄 도심부)" in twilio.bodies_to("+821055550105")[-1]
    english = twilio.bodies_to("+821055550106")[-1]
    assert "35.68, 139.69" in english and sms_text.is_gsm7(english)


def test_a_patch_of_the_shapes_keeps_the_name_and_null_removes_it(api, consul):
    area = {"countries": ["JP"], "name": {"ko": "도쿄", "en": "Tokyo"}}
    created = api.post("/v1/advisories", json=advisory_body(area=area), headers=consul)
    assert created.status_code == 201, created.text
    path = f"/v1/advisories/{created.json()['id']}"

    wider = api.patch(path, json={"area": {"countries": ["JP", "KR"]}}, headers=consul)
    assert wider.json()["revision"] == 2
    assert wider.json()["area"]["description"] == "Tokyo"
    assert wider.json()["area"]["description_ko"] == "도쿄"

    # The same words in one language or two are one name: no revision, nobody told again.
    same = {"countries": ["JP", "KR"], "name": {"ko": "Japan", "en": "Japan"}}
    assert api.patch(path, json={"area": same}, headers=consul).json()["revision"] == 3
    same["name"] = {"en": "Japan"}
    assert api.patch(path, json={"area": same}, headers=consul).json()["revision"] == 3

    unnamed = {"countries": ["JP", "KR"], "name": None}
    removed = api.patch(path, json={"area": unnamed}, headers=consul)
    assert removed.json()["revision"] == 4 and removed.json()["area"]["description"] == ""
