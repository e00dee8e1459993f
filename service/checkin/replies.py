"""Reading a citizen's SMS answer to "are you safe?" (1 = safe, 2 = need help) and the short
texts sent back. Pure text in, a reading out: finding the citizen and recording is the webhook's.

The rules, in order (docs/checkin.md has the table and the reasons):
- Text is NFKC-normalised (full-width `１` is `1`, `①` is `1`) and case-folded; apostrophes go
  (`I'm` is `im`); punctuation splits clauses; other symbols and emoji are dropped, except a few
  that answer (👍 👌 ✅ ✔ 🆗 read as ok, 🆘 as sos).
- A message that is one opt-out or opt-in keyword (STOP, UNSUBSCRIBE, …, START, YES, UNSTOP,
  수신거부) is `stop` / `start`: the provider acts on these by itself, so we mirror it. So `yes` is
  never read as safe.
- A 1 or 2 counts as the first word of a message (`1 안전합니다`, `2 - need help`, `2번`), or
  anywhere in a message of numbers only (`1 2` is both, `12` is neither). A later number is not an
  answer (`need help, 2 injured`).
- Words anywhere: safe, ok, fine, 안전, 괜찮, 무사 …; help, sos, emergency, injured, 도움,
  도와, 살려 …. A bare `help` is help: the carrier's HELP auto-reply in the US and Canada does
  not stop the message from reaching us, and missing a cry for help costs more than a call.
- A negated safe word is help (`not safe`, `안전하지 않아요`, `안 괜찮아요`): whoever says so
  needs a person to look. A negated help word says nothing (`no help needed`, `nobody is
  hurt`, `I don't need any help`), nor does one thanked for or over (`thanks for your help`,
  `the danger is over`, `도움 감사합니다`): we never conclude "safe" from those alone.
- Help wins: safe and help together (`I'm OK but my wife is hurt`, `1 need help`) is `help`.
  A person must read those words (the duty notice and the audited reveal carry them), and the
  answer tells the citizen to reply 1 if they are safe, so a slip costs one more text, while
  reading it as `unknown` lost the words of whoever could not text twice. Nothing heard is
  `unknown`.
"""

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

Answer = Literal["safe", "help"]
ReplyKind = Literal["safe", "help", "stop", "start", "unknown"]
Language = Literal["ko", "en"]


@dataclass(frozen=True)
class Reply:
    """What a reply says. `heard` keeps every answer found, also when they contradict each other
    (then kind is "help"), so a log line can say why a reply was read so."""

    kind: ReplyKind
    heard: frozenset[Answer] = frozenset()


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


_EMOJI = {"👍": " ok ", "👌": " ok ", "✅": " ok ", "✔": " ok ", "🆗": " ok ", "🆘": " sos "}
_APOSTROPHES = re.compile(r"['’‘`ʼ]")
_CLAUSE_BREAK = re.compile(r"[.,;:!?\n\r/|()\[\]{}\-–—~]+")
_TOKEN = re.compile(r"\d+|[^\W\d_]+")
# The provider's keywords (Twilio: a message of exactly one of these), plus the Korean phrases.
_STOP = {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "optout", "revoke", "수신거부"}
_START = {"start", "yes", "unstop", "수신동의", "수신재개"}
# Korean: 번/요/입니다 after a number are part of it ("2번이요", "1입니다").
_NUMBER_SUFFIX = re.compile(r"^(번|번이요|번요|번입니다|번이에요|이요|요|입니다|이에요|예요)$")

_EN_SAFE = {"safe", "safely", "ok", "okay", "okey", "fine", "alright", "unharmed", "uninjured"}
# Asking for help, and saying what is wrong. Only a state is negated by "nobody" ("nobody is
# hurt"); a request is not ("nobody here, we need help").
_EN_HELP_ASKED = {"help", "sos", "emergency", "rescue", "mayday", "assistance"}
_EN_HELP_STATE = {"danger", "injured", "hurt", "trapped", "unsafe"}
_EN_HELP = _EN_HELP_ASKED | _EN_HELP_STATE
_EN_WORDS: dict[str, Answer] = dict.fromkeys(_EN_SAFE, "safe") | dict.fromkeys(_EN_HELP, "help")
# Two-word answers, keyed by their second word.
_EN_PAIRS: dict[tuple[str, str], Answer] = {
    ("all", "good"): "safe",
    ("im", "good"): "safe",
    ("were", "good"): "safe",
    ("all", "right"): "safe",
}
# Words a negation reaches across ("not really safe", "don't feel safe").
_FILLERS = {"i", "im", "we", "were", "us", "me", "it", "its", "am", "is", "are", "was", "be"}
_FILLERS |= {"being", "been", "feel", "feeling", "feels", "very", "so", "too", "really", "quite"}
_FILLERS |= {"that", "at", "all", "completely", "totally", "entirely", "yet", "still", "here"}
_FILLERS |= {"now", "currently", "in", "a", "everyone", "everybody", "of"}
# Only after a negator of a help word: "don't need any help" (but "can't get help" and "never
# got help" are cries: get, got and have are no fillers).
_FILLERS_HELP = _FILLERS | {"need", "needs", "any", "send", "for", "more", "further"}
# Only before a state: "nobody has been hurt", "none of them got injured".
_FILLERS_STATE = _FILLERS_HELP | {"has", "have", "got", "them", "anyone"}
_NEGATORS = {"not", "never", "dont", "doesnt", "didnt", "isnt", "arent", "aint", "wasnt", "cant"}
_NEGATORS |= {"cannot", "wont", "nolonger", "noneed", "outof"}
_NOBODY = {"nobody", "noone", "none", "nobodys", "noones"}
# "without a safe place" is unsafe, but "without help we will die" is a cry for help.
_NEGATE_SAFE = _NEGATORS | _NOBODY | {"without"}
_JOINED = {("no", "longer"): "nolonger", ("no", "need"): "noneed", ("out", "of"): "outof"}
_JOINED |= {("no", "one"): "noone", ("thank", "you"): "thanks", ("thank", "u"): "thanks"}
# "thank you for your help": gratitude, not a request ("thank you help us" is one).
_THANKS = {"thanks", "thank", "thx", "grateful"}
_THANKED_OVER = {"your", "the", "all", "of", "and", "kind", "very", "much", "so", "you", "u"}
# "the rescue team came": rescued, not asking.
_RESCUE_CAME = {"came", "arrived", "come", "found"}
# "the danger is over", "the emergency has passed": only these can be over.
_CAN_END = {"danger", "emergency"}
_ENDED = {"over", "passed", "gone", "ended", "past", "finished"}
_NEEDED = {"needed", "necessary", "required"}
_UNNEEDED = {"unnecessary", "unneeded"}

# Korean stems, found in the clause with its spaces removed (SMS Korean spaces loosely).
_KO_SAFE = ("안전", "괜찮", "무사", "이상없", "문제없", "별일없", "멀쩡", "괜춘", "ㅇㅋ", "오케이")
# As in English: asking (도와주세요), and what is wrong (다쳤어요). "안 도와줘요" (nobody helps)
# and "도움 못 받았어요" (no help came) are cries; "안 다쳤어요" (not hurt) is not.
_KO_HELP_ASKED = ("도움", "도와", "살려", "구해", "구조", "긴급", "응급")
_KO_HELP_STATE = ("위험", "다쳤", "부상", "갇혔", "불안전")
# The same normalisation as the text ("ㅇㅋ" is compatibility jamo, which NFKC changes).
_KO_SAFE = tuple(map(_norm, _KO_SAFE))
_KO_HELP_ASKED, _KO_HELP_STATE = (
    tuple(map(_norm, _KO_HELP_ASKED)),
    tuple(map(_norm, _KO_HELP_STATE)),
)
_KO_NOT_BEFORE = ("안", "못")  # 안 괜찮아요, 안 다쳤어요
_KO_NOT_AFTER_SAFE = ("않", "못", "아니")  # 안전하지 않아요, 무사하지 못해, 안전한 게 아니에요
# 도움 필요 없어요; 긴급 상황 끝났어요.
_KO_NOT_AFTER_ASKED = ("필요없", "필요하지않", "안필요", "필요는없", "끝났", "지나갔")
# 구조됐어요, 구조대가 왔어요, 도움 받았어요: help came (but 구조대가 안 왔어요 did not).
_KO_NOT_AFTER_ASKED += ("됐", "되었", "받았", "대가왔", "대왔", "대가도착", "대도착")
_KO_DID_NOT_COME = ("못받", "안받", "못했", "안됐", "안되었")  # 도움 못 받았어요: a cry
# 위험하지 않아요, 부상자 없음, 위험에서 벗어났어요, 위험이 지나갔어요.
_KO_NOT_AFTER_STATE = (*_KO_NOT_AFTER_SAFE, "없", "벗어", "끝났", "지나갔", "지났")
# 도움 감사합니다, 도와주셔서 고맙습니다: thanks for help given (but "도와주세요 감사합니다",
# a polite cry, is help).
_KO_THANKED = re.compile(
    r"^(에|을|를)?(주셔서|줘서|주신|준)?(것|거)?(정말|너무|진짜|대단히)?(감사|고마|고맙)"
)
_KO_TAIL = 6  # characters after a stem where its negation stands


def classify(body: str) -> Reply:
    """Read an SMS reply; never raises, whatever the text."""
    text = _APOSTROPHES.sub("", _norm(body))
    for emoji, word in _EMOJI.items():
        text = text.replace(emoji, word)
    clauses = [_tokens(part) for part in _CLAUSE_BREAK.split(text)]
    clauses = [tokens for tokens in clauses if tokens]
    everything = [token for tokens in clauses for token in tokens]
    # One keyword, or two words that make one ("stop all", "opt out", "수신 거부"), as the
    # provider reads it: "s t o p" is no opt-out there, so none here.
    compact = "".join(everything) if len(everything) <= 2 else ""
    if compact in _STOP:
        return Reply("stop")
    if compact in _START:
        return Reply("start")
    heard = _numbers(everything) | {a for tokens in clauses for a in _words(tokens)}
    if "help" in heard:
        return Reply("help", frozenset(heard))
    if heard:
        return Reply("safe", frozenset(heard))
    return Reply("unknown")


def read_reply(body: str) -> Answer | None:
    """ "safe" or "help" when the reply clearly says one of them, else None."""
    kind = classify(body).kind
    return kind if kind == "safe" or kind == "help" else None


def _tokens(clause: str) -> list[str]:
    tokens: list[str] = []
    for token in _TOKEN.findall(clause):
        if tokens and tokens[-1].isdigit() and _NUMBER_SUFFIX.match(token):
            continue
        if tokens and (tokens[-1], token) in _JOINED:
            tokens[-1] = _JOINED[(tokens[-1], token)]
            continue
        tokens.append(token)
    return tokens


def _number(token: str) -> Answer | None:
    return {"1": "safe", "2": "help"}.get(token)


def _numbers(tokens: list[str]) -> set[Answer]:
    if not tokens:
        return set()
    if all(token.isdigit() for token in tokens):
        found = [_number(token) for token in tokens]
        # "1 3": which one is the answer is anyone's guess.
        return set() if None in found else {a for a in found if a}
    first = _number(tokens[0])
    return {first} if first else set()


def _words(tokens: list[str]) -> set[Answer]:
    heard: set[Answer] = set()
    for i, word in enumerate(tokens):
        answer = _EN_WORDS.get(word)
        if word == "helping" and tokens[i + 1 : i + 2] in (["us"], ["me"]):
            answer = "help"  # "nobody is helping us" (but "helping others" is no cry)
        if answer is None and i:
            answer = _EN_PAIRS.get((tokens[i - 1], word))
        if answer == "safe":
            heard.add("help" if _negated_safe(tokens, i) else "safe")
        elif answer == "help" and not (
            _negated_help(tokens, i)
            or _not_needed(tokens, i)
            or _thanked(tokens, i)
            or _ended(tokens, i)
            or _rescued(tokens, i)
        ):
            heard.add("help")
    return heard | _korean("".join(tokens))


def _negator_before(tokens: list[str], i: int, fillers: set[str]) -> str | None:
    """The first word before tokens[i] that is not a filler (None: only fillers)."""
    for j in range(i - 1, -1, -1):
        if tokens[j] not in fillers:
            return tokens[j]
    return None


def _negated_safe(tokens: list[str], i: int) -> bool:
    """ "not safe", "don't feel safe", "nobody is safe", "no ok"."""
    if i and tokens[i - 1] == "no":
        return True
    return _negator_before(tokens, i, _FILLERS) in _NEGATE_SAFE


def _negated_help(tokens: list[str], i: int) -> bool:
    """ "don't need any help", "not hurt", "nobody is hurt" (a state only), "no injured"
    (a state only: "no help yet" is a cry)."""
    state = tokens[i] in _EN_HELP_STATE
    if state and i and tokens[i - 1] == "no":
        return True
    word = _negator_before(tokens, i, _FILLERS_STATE if state else _FILLERS_HELP)
    return word in _NEGATORS or (state and word in _NOBODY)


def _not_needed(tokens: list[str], i: int) -> bool:
    """ "help not needed", "no help needed", "help is unnecessary"."""
    after = set(tokens[i + 1 : i + 4])
    if after & _UNNEEDED:
        return True
    if not after & _NEEDED:
        return False
    return "not" in after or (i > 0 and tokens[i - 1] == "no")


def _thanked(tokens: list[str], i: int) -> bool:
    """ "thank you for your help", "thanks for all the help": a "for" between the thanks and
    the help, which ends the clause."""
    if i != len(tokens) - (2 if tokens[i] == "helping" else 1):  # "… for helping us"
        return False
    seen_for = False
    for j in range(i - 1, -1, -1):
        if tokens[j] in _THANKS:
            return seen_for
        if tokens[j] == "for":
            seen_for = True
        elif tokens[j] not in _THANKED_OVER:
            return False
    return False


def _ended(tokens: list[str], i: int) -> bool:
    """ "the danger is over", "the emergency has passed": the clause ends on it ("trapped for
    over 3 hours" and "help over here" do not)."""
    if tokens[i] not in _CAN_END or len(tokens) - i > 4:
        return False
    rest = tokens[i + 1 :]
    return bool(rest) and rest[-1] in _ENDED and all(t in _FILLERS_STATE for t in rest[:-1])


def _rescued(tokens: list[str], i: int) -> bool:
    """ "the rescue team came", "rescue arrived"."""
    if tokens[i] != "rescue":
        return False
    after = tokens[i + 1 : i + 4]
    return any(word in _RESCUE_CAME for word in after) and "not" not in after


def _korean(compact: str) -> set[Answer]:
    heard: set[Answer] = set()
    for stem in _KO_SAFE:
        for found in re.finditer(re.escape(stem), compact):
            before = compact[: found.start()]
            if before.endswith("불"):
                continue  # 불안전: unsafe, a help stem of its own
            tail = compact[found.end() : found.end() + _KO_TAIL]
            negated = before.endswith(_KO_NOT_BEFORE) or any(w in tail for w in _KO_NOT_AFTER_SAFE)
            heard.add("help" if negated else "safe")
    for stem in _KO_HELP_ASKED:
        for found in re.finditer(re.escape(stem), compact):
            tail = compact[found.end() : found.end() + _KO_TAIL]
            if _KO_THANKED.match(compact[found.end() :]) and stem in ("도움", "도와"):
                continue
            if not any(w in tail for w in _KO_NOT_AFTER_ASKED) or any(
                w in tail for w in _KO_DID_NOT_COME
            ):
                heard.add("help")
    for stem in _KO_HELP_STATE:
        for found in re.finditer(re.escape(stem), compact):
            tail = compact[found.end() : found.end() + _KO_TAIL]
            negated = compact[: found.start()].endswith(_KO_NOT_BEFORE) or any(
                w in tail for w in _KO_NOT_AFTER_STATE
            )
            if not negated:
                heard.add("help")
    return heard


_TEXTS: dict[tuple[ReplyKind, Language], str] = {
    ("safe", "en"): "Thank you. We recorded that you are safe. If that changes, reply 2.",
    ("help", "en"): "We recorded that you need help and told the consular duty staff. "
    "In immediate danger, call the local emergency number. Reply 1 if you are safe.",
    ("unknown", "en"): "Sorry, we could not read your reply. "
    "Reply 1 if you are safe or 2 if you need help.",
    ("stop", "en"): "You will get no more SMS from us on this number. Reply START to resume.",
    ("start", "en"): "SMS from us to this number are back on. Reply STOP to turn them off.",
    ("safe", "ko"): "안전하다고 기록했습니다. 감사합니다. 상황이 바뀌면 2를 보내 주세요.",
    ("help", "ko"): "도움 요청을 기록하고 영사 당직자에게 알렸습니다. "
    "위급하면 현지 긴급번호로 전화하세요. 안전하면 1을 보내 주세요.",
    ("unknown", "ko"): "답장을 읽지 못했습니다. 안전하면 1, 도움이 필요하면 2를 보내 주세요.",
    ("stop", "ko"): "이 번호로 더는 문자를 보내지 않습니다. 다시 받으려면 START를 보내 주세요.",
    ("start", "ko"): "이 번호로 문자를 다시 보냅니다. 그만 받으려면 STOP을 보내 주세요.",
}
_UNMATCHED = "안전 확인 문자에 답장해 주세요. Please reply to a safety check-in message from us."


_UNASKED_HELP = {
    "en": "We told the consular duty staff that you need help. "
    "In immediate danger, call the local emergency number.",
    "ko": "도움 요청을 영사 당직자에게 알렸습니다. 위급하면 현지 긴급번호로 전화하세요.",
}


# With no duty contact set (ANJEON_DUTY_EMAIL, ANJEON_DUTY_WEBHOOK_URL: a demo or a test set-up;
# production refuses to start so) nobody is paged: the citizen is not told anyone was.
_HELP_SEEN = {
    "en": "We recorded that you need help; consular staff will see it. "
    "In immediate danger, call the local emergency number.",
    "ko": "도움 요청을 기록했습니다. 영사 직원이 확인합니다. 위급하면 현지 긴급번호로 전화하세요.",
}
_REPLY_1 = {"en": " Reply 1 if you are safe.", "ko": " 안전하면 1을 보내 주세요."}


def answer_text(
    kind: ReplyKind, language: Language, *, unasked: bool = False, duty_paged: bool = True
) -> str:
    """The SMS answer to a reading, one segment long; "unknown" gets how to answer. A help
    that no check-in asked for (`unasked`) is not told to reply 1: nothing would take it. A
    help when no duty contact is set (`duty_paged` false) does not say the duty staff were
    told."""
    if kind == "help" and not duty_paged:
        return _HELP_SEEN[language] + ("" if unasked else _REPLY_1[language])
    if unasked and kind == "help":
        return _UNASKED_HELP[language]
    return _TEXTS[(kind, language)]


def unmatched_text() -> str:
    """The answer when no citizen or no open check-in matches: says nothing about the record."""
    return _UNMATCHED
