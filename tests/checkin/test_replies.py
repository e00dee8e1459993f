"""Reading SMS replies to "are you safe?": a table of real-world variants in Korean and English,
and properties over random text (never raises; safe and help together are never read as either)."""

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.checkin.replies import answer_text, classify, read_reply, unmatched_text
from service.dispatch.sms_text import is_gsm7, segments

SAFE = [
    "1",
    "１",  # full-width
    " 1 ",
    "1.",
    "#1",
    "1!",
    "(1)",
    "①",
    "1️⃣",
    "1번",
    "1번 안전",
    "1번안전",
    "1 안전합니다",
    "1입니다",
    "1 - safe",
    "1 안전",  # the way the SMS itself spells it
    "safe",
    "SAFE!",
    "Safe.",
    "ＳＡＦＥ",
    "I'm safe",
    "I’m safe",  # a phone's curly apostrophe
    "im safe",
    "I am safe",
    "We are all safe",
    "ok I'm safe",
    "OK",
    "okay thanks",
    "I'm fine",
    "all good here",
    "Safe and sound",
    "Safe, not hurt",
    "not hurt, safe",
    "Don't worry, I'm safe",
    "dont worry im safe",
    "No help needed, I'm safe",
    "Yes I'm safe",  # not the bare opt-in keyword
    "safe with my 2 kids",  # a later number is not an answer
    "👍",
    "✅",
    "safe 👍🏽",
    "안전",
    "안전합니다",
    "안전해요",
    "안전해요~",
    "저는 안전합니다",
    "괜찮아요",
    "괜찮습니다!",
    "무사합니다",
    "무사해요",
    "이상 없습니다",
    "문제없어요",
    "ㅇㅋ",
    "1 괜찮아요",
    "도움 필요 없고 안전합니다",
    # Negated, thanked or ended help words with a safe word: safe, never a page.
    "I'm safe, I don't need help",
    "We are all safe, nobody is hurt",
    "1 safe, nobody was injured",
    "ok thank you for your help",
    "im ok, the danger is over",
    "no one is hurt, we are fine",
    "none of us is hurt, all ok",
    "safe, do not need help",
    "the danger has passed, we are ok",
    "we are safe, thanks for the help",
    "안전합니다 도움 감사합니다",
    "도와주셔서 감사합니다 안전해요",
    "위험이 지나갔어요 괜찮아요",
    "safe, no help needed",
    "괜찮아요 도움 필요 없어요",
    "안 다쳤어요 괜찮아요",
    # An attacker's probe found these read as help (each a duty page in a crisis).
    "Safe. Dont send help",
    "safe, no need for help",
    "All safe, the rescue team came",
    "we are fine, helping others",
    "thank you for helping me, we are safe",
    "괜찮아요 구조됐어요",
    "안전해요. 구조대가 왔어요",
]
HELP = [
    "2",
    "２",
    " 2 ",
    "2.",
    "#2",
    "2번",
    "2번이요",
    "2번도와주세요",
    "2 - need help",
    "2 도움",
    "help",
    "HELP",  # the carrier answers it too in the US and Canada; we still hear a cry for help
    "Help!",
    "help me",
    "need help",
    "I need help",
    "HELP ME PLEASE",
    "help required",
    "SOS",
    "🆘",
    "emergency",
    "I'm injured",
    "we are trapped",
    "need help, 2 injured",
    "not safe",  # a negated safe is help, never unknown
    "NOT SAFE",
    "I'm not safe",
    "I don't feel safe",
    "not really safe",
    "unsafe",
    "not ok",
    "no longer safe",
    "도움",
    "도움이 필요해요",
    "도와주세요",
    "도와줘요!!",
    "살려주세요",
    "구해주세요",
    "다쳤어요",
    "위험해요",
    "안전하지 않아요",  # as "not safe"
    "안전하지않아요",
    "안전한 게 아니에요",
    "안 괜찮아요",
    "괜찮지 않아요",
    # Help wins over safe: a person reads the words, the citizen can still reply 1.
    "I'm OK but my wife is hurt",
    "we are fine but our friend is injured",
    "저는 괜찮은데 아내가 다쳤어요",
    "1 2",
    "1,2",
    "1/2",
    "safe? help?",
    "I'm safe but need help",
    "1 need help",
    "2 I'm safe",
    "안전? 도움?",
    "1 도와주세요",
    "help! thank you",  # thanks in another sentence: still a cry for help
    "thanks. need help",
    "thank you but I need help",
    "ok but we need help",
    "everybody needs help",
    # Cries that a too-eager negation, thanks or "over" once read as unknown (a review).
    "help over here",
    "injured over here",
    "trapped for over 3 hours",
    "can't get help",
    "never got help",
    "I dont have any help",
    "no one is here we need help",
    "nobody here need help",
    "thank you help us",
    "thanks help",
    "no help yet",
    "still no help",
    "nobody is helping us",
    "without help we will die",
    "not everyone is safe",
    "nobody's OK",
    "도와주세요 감사합니다",
    "살려주세요 고맙습니다",
    "다쳤어요 감사합니다",
    "위험해요 고마워요",
    "도움 못 받았어요",
    "아무도 안 도와줘요",
    "please send help",
    "waiting for help",
    "need more help",
    "we need rescue",
    "구조대가 안 왔어요",
]
UNKNOWN = [
    "12",
    "21",
    "11",
    "1 3",
    "3",
    "0",
    "maybe",
    "",
    "   ",
    "?",
    "...",
    "INFO",  # a carrier keyword that asks nothing of us
    "info",
    "hello",
    "thanks",
    "what is this",
    "no help needed",  # a negated help never makes a reply safe
    "help not needed",
    "I am not in danger",
    "도움 필요 없어요",
    "위험에서 벗어났어요",
    "네",
    "no",
    "🙏",
    "❤️",
    "stop sending me messages",  # not the bare keyword: the provider does not act on it either
    "STOP 2",
    "I don't need any help",
    "nobody is hurt",
    "thank you for your help",
    "the danger is over",
    "s t o p",  # no keyword for the provider either
    "thanks for helping us",
]
STOP = [
    "STOP",
    "stop",
    "Stop.",
    " STOP ",
    "STOPALL",
    "stop all",
    "UNSUBSCRIBE",
    "Cancel",
    "END",
    "quit",
    "OPTOUT",
    "opt-out",
    "REVOKE",
    "수신거부",
    "수신 거부",
]
START = ["START", "start", "yes", "YES", "Yes!", "unstop", "수신재개"]

TABLE = [
    *[(body, "safe") for body in SAFE],
    *[(body, "help") for body in HELP],
    *[(body, "unknown") for body in UNKNOWN],
    *[(body, "stop") for body in STOP],
    *[(body, "start") for body in START],
]


def test_the_table_is_large_and_has_no_duplicates():
    bodies = [body for body, _ in TABLE]
    assert len(bodies) == len(set(bodies))
    assert len(TABLE) >= 60
    assert len(UNKNOWN) >= 20


@pytest.mark.parametrize(("body", "kind"), TABLE, ids=[repr(b) for b, _ in TABLE])
def test_reply_table(body: str, kind: str):
    assert classify(body).kind == kind
    assert read_reply(body) == (kind if kind in ("safe", "help") else None)


def test_ambiguous_replies_keep_what_was_heard():
    assert classify("safe? help?").heard == {"safe", "help"}
    assert classify("1 2").heard == {"safe", "help"}
    assert classify("12").heard == set()
    assert classify("STOP").heard == set()


# ---- properties ---------------------------------------------------------------------------------


@given(st.text())
def test_any_text_is_read_without_raising(body: str):
    reply = classify(body)
    assert reply.kind in {"safe", "help", "stop", "start", "unknown"}
    assert read_reply(body) == (reply.kind if reply.kind in ("safe", "help") else None)
    if reply.kind in ("safe", "help"):
        assert reply.heard and (reply.kind == "help") == ("help" in reply.heard)
    else:
        assert not reply.heard


CLEAR_SAFE = ["safe", "I'm safe", "ok", "I am fine", "안전합니다", "괜찮아요", "무사해요", "👍"]
CLEAR_HELP = ["help", "need help", "SOS", "not safe", "도와주세요", "살려주세요", "안전하지 않아요"]
SEPARATORS = [" ", ". ", ", ", "! ", "? ", " - ", "\n", " / "]
_NOT_INERT = "'’‘`ʼ" + "👍👌✅✔🆗🆘"  # apostrophes glue words; these emoji answer


def _inert(c: str) -> bool:
    """Punctuation, symbols and spaces that stay without letters or digits after NFKC (so "№"
    and "℡", which become words, are left out), other than apostrophes and answering emoji."""
    return c not in _NOT_INERT and not any(ch.isalnum() for ch in unicodedata.normalize("NFKC", c))


filler = st.text(st.characters(categories=["P", "S", "Zs"]).filter(_inert), max_size=5)


@given(
    st.sampled_from(CLEAR_SAFE),
    st.sampled_from(CLEAR_HELP),
    st.sampled_from(SEPARATORS),
    st.booleans(),
    filler,
    filler,
)
def test_a_clear_safe_with_a_clear_help_is_help(safe, help_, separator, help_first, f1, f2):
    first, second = (help_, safe) if help_first else (safe, help_)
    reply = classify(f"{f1}{first}{separator}{second}{f2}")
    assert reply.kind == "help"
    assert reply.heard == {"safe", "help"}


@given(st.sampled_from(TABLE), filler, filler)
def test_punctuation_and_spaces_around_a_reply_change_nothing(row, before, after):
    body, kind = row
    assert classify(f"{before} {body} {after}").kind == kind


def _full_width(text: str) -> str:
    return "".join(
        chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in text
    )


@pytest.mark.parametrize(("body", "kind"), TABLE, ids=[repr(b) for b, _ in TABLE])
def test_full_width_and_capitals_read_the_same(body: str, kind: str):
    assert classify(_full_width(body)).kind == kind
    assert classify(body.upper()).kind == kind


# ---- the answers --------------------------------------------------------------------------------

KINDS = ["safe", "help", "stop", "start", "unknown"]


@pytest.mark.parametrize("language", ["ko", "en"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("duty_paged", [True, False])
@pytest.mark.parametrize("unasked", [False, True])
def test_each_answer_is_one_sms_segment(kind, language, duty_paged, unasked):
    text = answer_text(kind, language, unasked=unasked, duty_paged=duty_paged)
    assert segments(text) == 1
    # English stays in GSM-7 (160 characters); Korean is UCS-2 (70).
    assert is_gsm7(text) == (language == "en")
    if kind == "help":
        # Paged or not, the citizen is told exactly that, and to call locally if in danger.
        told = "told the consular duty staff" in text or "영사 당직자에게 알렸습니다" in text
        assert told == duty_paged
        assert "emergency" in text or "긴급번호" in text
        assert ("1" in text) != unasked


@pytest.mark.parametrize("language", ["ko", "en"])
def test_the_answers_say_how_to_answer_or_correct(language):
    unknown = answer_text("unknown", language)
    assert "1" in unknown and "2" in unknown
    assert "2" in answer_text("safe", language)  # if that changes
    assert "1" in answer_text("help", language)  # if it was a mistake
    assert "START" in answer_text("stop", language) and "STOP" in answer_text("start", language)
    assert answer_text("safe", "ko") != answer_text("safe", "en")


def test_the_unmatched_answer_is_neutral_and_bilingual():
    text = unmatched_text()
    assert segments(text) == 1
    assert any("가" <= c <= "힣" for c in text) and "reply" in text.lower()
    # Whether the number is on the register is not said, in either language.
    assert "regist" not in text.lower() and "등록" not in text


def test_the_documented_answers_are_the_ones_sent():
    page = (Path(__file__).resolve().parents[2] / "docs" / "checkin.md").read_text()
    for kind in KINDS:
        for language in ("ko", "en"):
            assert answer_text(kind, language) in page
            assert answer_text(kind, language, duty_paged=False) in page
