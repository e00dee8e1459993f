"""SMS segment rules: GSM-7 160/153, UCS-2 70/67 (Korean), cut at a word, link kept whole."""

import pytest

from service.advisories.formats import parse
from service.dispatch import sms_text
from service.dispatch.content import AlertContent
from service.dispatch.render import Renderer
from tests.advisories.feed_samples import sample

LINK = "https://anjeon.test/a/12345.abcdef0123"


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters take two septets
        ("€" * 81, 2),
        ("가" * 70, 1),
        ("가" * 71, 2),
        ("가" * 134, 2),
        ("가" * 135, 3),
        ("a" * 159 + "가", 3),  # one Korean letter makes the whole message UCS-2
        ("😀" * 35, 1),  # outside the BMP: two UCS-2 units each
        ("😀" * 36, 2),
    ],
)
def test_segment_counts(text, segments):
    assert sms_text.segments(text) == segments


def test_fit_cuts_at_a_word_and_keeps_the_link():
    words = " ".join(["여행을"] * 60)
    for limit in (1, 2, 3):
        body = sms_text.fit(words, LINK, max_segments=limit)
        assert sms_text.segments(body) <= limit
        assert body.endswith(" " + LINK)
        head = body.removesuffix(" " + LINK)
        assert head.endswith("여행을…")  # whole words only, then the ellipsis


def test_fit_leaves_short_text_alone_and_gsm_uses_dots():
    assert sms_text.fit("Short alert", LINK, max_segments=1) == f"Short alert {LINK}"
    body = sms_text.fit("word " * 100, LINK, max_segments=2)
    assert sms_text.is_gsm7(body) and sms_text.segments(body) == 2
    assert body.endswith(f"word... {LINK}")


def content(message: str) -> AlertContent:
    return AlertContent(
        advisory_public_id="x",
        revision=1,
        kind="new",
        level="3",
        title={"ko": "방콕 시위 격화"},
        message={"ko": message},
        area={"countries": ["TH"]},
        source="",
        expires=None,
    )


def test_korean_alert_is_cut_to_the_configured_segments():
    renderer = Renderer(sender={"ko": "외교부", "en": "MOFA"}, max_segments=2)
    long_message = "시위가 격화되고 있으니 시위 현장 접근을 삼가고 " * 20
    rendered = renderer.sms(content(long_message), language="ko", link=LINK)
    assert rendered.segments == 2 == sms_text.segments(rendered.text)
    assert rendered.text.startswith("[외교부] 여행경보 3단계(출국권고): 방콕 시위 격화")
    assert rendered.text.endswith(LINK)


def test_what_displays_as_other_text_never_reaches_a_message():
    """Found in review: the feed's own cleaning missed fields (a USGS place, a CAP areaDesc,
    staff's own words), and an unclosed U+202E before our link showed it reversed. Every word
    we send loses such characters as it is rendered, whoever wrote them."""
    renderer = Renderer(sender={"ko": "외교부", "en": "MOFA"}, max_segments=3)
    tricked = AlertContent(
        advisory_public_id="x",
        revision=1,
        kind="new",
        level="3",
        title={"en": "Quake near \u202emoc.live//:sptth"},
        message={"en": "Stay \x07away\u2066 from the coast"},
        area={"countries": ["TH"], "description": "Bangkok \u202emoc.live//:sptth"},
        source="",
        expires=None,
    )
    for language in ("en", "ko"):
        sms = renderer.sms(tricked, language=language, link=LINK).text
        mail = renderer.email(tricked, language=language, link=LINK)
        for text in (sms, mail.text, mail.subject, mail.html):
            assert not set(text) & {"\u202e", "\u2066", "\x07"}, text
        assert "Quake near moc.live//:sptth" in sms and "Stay away from the coast" in sms


def test_english_citizen_gets_the_korean_words_in_an_english_message():
    """The title and text exist in Korean only: they come in Korean, the rest in English."""
    renderer = Renderer(sender={"ko": "외교부", "en": "MOFA"}, max_segments=3)
    rendered = renderer.sms(content("짧은 안내"), language="en", link=LINK)
    assert rendered.text.startswith("[MOFA] Level 3 (departure recommended): 방콕 시위 격화")
    assert "짧은 안내 (Thailand)" in rendered.text and "태국" not in rendered.text


def test_look_alike_punctuation_makes_an_english_text_gsm7():
    text = "The embassy’s “advice” – stay indoors… until 18:00\u00a0local time."
    assert not sms_text.is_gsm7(text)
    swapped = sms_text.as_gsm7(text)
    assert swapped == 'The embassy\'s "advice" - stay indoors... until 18:00 local time.'
    long_text = " ".join([text] * 5)
    assert sms_text.segments(long_text) == 5  # as UCS-2: 330 characters at 67 a part
    body = sms_text.fit(long_text, LINK, max_segments=3)
    assert sms_text.is_gsm7(body) and sms_text.segments(body) == 3
    assert body == f"{sms_text.as_gsm7(long_text)} {LINK}"  # all of it fits


@pytest.mark.parametrize(
    "text",
    [
        "대사관의 “권고” – 보고타(Bogotá) 외출 자제",  # Korean is UCS-2 anyway: kept as written
        "Łódź – Poland: Ł has no GSM-7 twin",  # one letter without a twin keeps it all
    ],
)
def test_look_alikes_stay_when_the_text_stays_ucs2(text):
    assert sms_text.as_gsm7(text) == text
    assert sms_text.fit(text, LINK, max_segments=3) == f"{text} {LINK}"


def test_a_ucs2_letter_beyond_the_cut_leaves_the_sms_gsm7():
    text = "Avoid the border area – stay in your hotel. " * 20 + "Updates from Łódź follow."
    body = sms_text.fit(text, LINK, max_segments=3)
    assert sms_text.is_gsm7(body) and sms_text.segments(body) == 3
    assert body.startswith("Avoid the border area - stay") and body.endswith(f"... {LINK}")
    assert len(body) > 2 * sms_text.capacity(3, gsm=False)  # as UCS-2 it would hold 201
    near = "Łódź: " + text
    assert not sms_text.is_gsm7(sms_text.fit(near, LINK, max_segments=3))  # within: UCS-2


def test_real_english_feed_text_goes_as_gsm7():
    """The US State Department's advisories carry curly apostrophes, non-breaking spaces and
    Spanish place names, and a cut text ends in "…": each made the English SMS UCS-2 (at most
    201 characters in 3 segments, not 459). Now an English SMS is UCS-2 only when a letter
    without a GSM-7 twin is within what it shows."""
    data = sample("us-state-dept/travel-state-gov-TAsTWs-2025-10-07.xml.gz")
    renderer = Renderer(sender={"ko": "외교부", "en": "MOFA"}, max_segments=3)
    drafts = parse("rss", data).drafts
    sent_as_ucs2 = 0
    for i, draft in enumerate(drafts):
        content = AlertContent(
            advisory_public_id=str(i),
            revision=1,
            kind="new",
            level=draft.level,
            title=draft.title,
            message=draft.message,
            area=draft.area.to_json(),
            source="rss",
            expires=None,
        )
        shown = renderer.sms(content, language="en", link=LINK).text
        if not sms_text.is_gsm7(shown):
            sent_as_ucs2 += 1
            assert any(not sms_text.is_gsm7(sms_text.as_gsm7(c)) for c in shown), shown
    not_gsm7 = [d for d in drafts if not sms_text.is_gsm7(d.title["en"] + d.message["en"])]
    assert len(not_gsm7) > 100 and sent_as_ucs2 < len(drafts) / 10


def test_a_gsm7_cut_never_ends_inside_a_word():
    """The GSM-7 part stops before the word of the first UCS-2 letter: with none before it, the
    text goes as UCS-2 rather than end inside that word."""
    tail = f"Reply 1 = safe / 2 = need help {LINK}"
    body = sms_text.fit("Łódź" + " stay safe" * 60, tail, max_segments=1)
    assert body == f"… {tail}"  # no room for a word as UCS-2, and none before the Ł
    body = sms_text.fit("Stay in Łódź" + " stay safe" * 60, LINK, max_segments=3)
    assert body.startswith("Stay in Łódź")  # UCS-2 shows more than "Stay in..." would


def test_latin_letters_lose_the_accent_gsm7_lacks():
    text = "Protests in Bogotá and Hà Nội; avoid Medellín’s centre."
    assert (
        sms_text.as_gsm7(text) == "Protests in Bogota and Hà Noi; avoid Medellin's centre."
    )  # à is GSM-7
    assert sms_text.as_gsm7("Zürich, Málaga") == "Zürich, Malaga"  # ü is GSM-7: kept
