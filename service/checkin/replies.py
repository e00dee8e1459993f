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
_EN_HELP = {"help", "sos", "emergency", "danger", "injured", "hurt", "trapped", "rescue"}
_EN_HELP |= {"mayday", "assistance", "unsafe"}
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
_FILLERS |= {"now", "currently", "in", "a"}
# "don't need any help", "nobody is hurt", "no one was injured".
_FILLERS |= {"need", "needs", "any", "some", "has", "have", "got", "get", "getting", "our"}
_FILLERS |= {"of", "them", "anyone", "anybody"}
_NEGATORS = {"not", "never", "dont", "doesnt", "didnt", "isnt", "arent", "aint", "wasnt", "cant"}
_NEGATORS |= {"cannot", "wont", "without", "nolonger", "noneed", "outof", "nobody", "noone"}
_NEGATORS |= {"none", "nothing"}
_JOINED = {("no", "longer"): "nolonger", ("no", "need"): "noneed", ("out", "of"): "outof"}
_JOINED |= {("no", "one"): "noone", ("thank", "you"): "thanks", ("thank", "u"): "thanks"}
# "thanks for your help": gratitude, not a request.
_THANKS = {"thanks", "thank", "thx", "appreciate", "grateful"}
_THANKED_OVER = {"for", "your", "the", "all", "of", "and", "kind", "very", "much", "so"}
_THANKED_OVER |= {"you", "u", "everyone"}
# "the danger is over", "the emergency has passed".
_ENDED = {"over", "passed", "gone", "ended", "past", "finished"}
_NEEDED = {"needed", "necessary", "required"}
_UNNEEDED = {"unnecessary", "unneeded"}

# Korean stems, found in the clause with its spaces removed (SMS Korean spaces loosely).
_KO_SAFE = ("안전", "괜찮", "무사", "이상없", "문제없", "별일없", "멀쩡", "괜춘", "ㅇㅋ", "오케이")
_KO_HELP = ("도움", "도와", "살려", "구해", "구조", "위험", "긴급", "응급", "다쳤", "부상", "갇혔")
_KO_HELP += ("불안전",)
# The same normalisation as the text ("ㅇㅋ" is compatibility jamo, which NFKC changes).
_KO_SAFE, _KO_HELP = tuple(map(_norm, _KO_SAFE)), tuple(map(_norm, _KO_HELP))
_KO_NOT_BEFORE = ("안", "못")  # 안 괜찮아요, 못 ...
_KO_NOT_AFTER_SAFE = ("않", "못", "아니")  # 안전하지 않아요, 무사하지 못해, 안전한 게 아니에요
# 도움 필요 없어요, 위험에서 벗어났어요
# 도움 감사합니다 (thanks for the help), 위험이 지나갔어요 (the danger has passed).
_KO_NOT_AFTER_HELP = (*_KO_NOT_AFTER_SAFE, "없", "안필요", "벗어", "감사", "고마", "고맙")
_KO_NOT_AFTER_HELP += ("끝났", "지나갔", "지났")
_KO_TAIL = 6  # characters after a stem where its negation stands


def classify(body: str) -> Reply:
    """Read an SMS reply; never raises, whatever the text."""
    text = _APOSTROPHES.sub("", _norm(body))
    for emoji, word in _EMOJI.items():
        text = text.replace(emoji, word)
    clauses = [_tokens(part) for part in _CLAUSE_BREAK.split(text)]
    clauses = [tokens for tokens in clauses if tokens]
    everything = [token for tokens in clauses for token in tokens]
    compact = "".join(everything)
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
    for i, token in enumerate(tokens):
        answer = _EN_WORDS.get(token)
        if answer is None and i:
            answer = _EN_PAIRS.get((tokens[i - 1], token))
        if answer == "safe":
            heard.add("help" if _negated(tokens, i) else "safe")
        elif answer == "help" and not (
            _negated(tokens, i) or _not_needed(tokens, i) or _thanked(tokens, i)
        ):
            heard.add("help")
    return heard | _korean("".join(tokens))


def _negated(tokens: list[str], i: int) -> bool:
    """A negator before the word, with only fillers between; "no" only right before it."""
    if i and tokens[i - 1] == "no":
        return True
    for j in range(i - 1, -1, -1):
        if tokens[j] not in _FILLERS:
            return tokens[j] in _NEGATORS
    return False


def _not_needed(tokens: list[str], i: int) -> bool:
    """ "help not needed", "help is unnecessary", "the danger is over"."""
    after = set(tokens[i + 1 : i + 4])
    if after & (_UNNEEDED | _ENDED):
        return True
    return "not" in after and bool(after & _NEEDED)


def _thanked(tokens: list[str], i: int) -> bool:
    """ "thank you for your help", "thanks for all the help"."""
    for j in range(i - 1, -1, -1):
        if tokens[j] in _THANKS:
            return True
        if tokens[j] not in _THANKED_OVER:
            return False
    return False


def _korean(compact: str) -> set[Answer]:
    heard: set[Answer] = set()
    for stems, answer, after in (
        (_KO_SAFE, "safe", _KO_NOT_AFTER_SAFE),
        (_KO_HELP, "help", _KO_NOT_AFTER_HELP),
    ):
        for stem in stems:
            for found in re.finditer(re.escape(stem), compact):
                if answer == "safe" and compact[: found.start()].endswith("불"):
                    continue  # 불안전: unsafe, a help stem of its own
                tail = compact[found.end() : found.end() + _KO_TAIL]
                negated = compact[: found.start()].endswith(_KO_NOT_BEFORE) or any(
                    word in tail for word in after
                )
                if not negated:
                    heard.add(answer)
                elif answer == "safe":
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


def answer_text(kind: ReplyKind, language: Language, *, unasked: bool = False) -> str:
    """The SMS answer to a reading, one segment long; "unknown" gets how to answer. A help
    that no check-in asked for (`unasked`) is not told to reply 1: nothing would take it."""
    if unasked and kind == "help":
        return _UNASKED_HELP[language]
    return _TEXTS[(kind, language)]


def unmatched_text() -> str:
    """The answer when no citizen or no open check-in matches: says nothing about the record."""
    return _UNMATCHED
