"""SMS length rules: GSM-7 (160 characters, 153 a part when split) unless a character needs
UCS-2 (70, 67 a part; Korean always does). Extension characters like € take two GSM septets;
characters outside the Basic Multilingual Plane take two UCS-2 units."""

import re
import unicodedata
from functools import cache

_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = set("^{}\\[~]|€\f")
ELLIPSIS = "…"

# Punctuation and spaces that look like GSM-7 characters (the Smart Encoding tables of Twilio,
# Telnyx and Sinch): a curly apostrophe or a cut text's "…" in a feed's English text would
# otherwise make the whole SMS UCS-2, 70 characters a segment instead of 160.
_LOOK_ALIKES = str.maketrans(
    {
        **dict.fromkeys("«»“”„‟″‶＂ʺˮ❝❞〝〞", '"'),
        **dict.fromkeys("‘’‚‛′‵ʹʼʻˈʽ´ˊˋ❛❜＇`", "'"),
        **dict.fromkeys("‐‑‒–—―−⁃", "-"),
        **dict.fromkeys(
            "\t\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
            "\u2009\u200a\u202f\u205f\u3000",
            " ",
        ),
        **dict.fromkeys("\u200b\u2060\ufeff", ""),
        "…": "...",
        "•": "-",
    }
)


def is_gsm7(text: str) -> bool:
    return all(c in _GSM_BASIC or c in _GSM_EXTENSION for c in text)


def units(text: str, *, gsm: bool) -> int:
    """Length in the encoding's units: septets for GSM-7, UTF-16 code units for UCS-2."""
    if gsm:
        return sum(2 if c in _GSM_EXTENSION else 1 for c in text)
    return sum(2 if ord(c) > 0xFFFF else 1 for c in text)


def segments(text: str) -> int:
    gsm = is_gsm7(text)
    single, part = (160, 153) if gsm else (70, 67)
    length = units(text, gsm=gsm)
    return 1 if length <= single else -(-length // part)


def capacity(max_segments: int, *, gsm: bool) -> int:
    single, part = (160, 153) if gsm else (70, 67)
    return single if max_segments == 1 else part * max_segments


def as_gsm7(text: str) -> str:
    """The text made GSM-7 when look-alike punctuation and Latin letters without their accent
    ("Bogotá" as "Bogota", as English writes it) make all of it GSM-7; else unchanged (a
    Korean text is UCS-2 anyway, and keeps its typography)."""
    swapped = _gsm_form(text)
    return swapped if is_gsm7(swapped) else text


def _gsm_form(text: str) -> str:
    swapped = text.translate(_LOOK_ALIKES)
    if is_gsm7(swapped):
        return swapped
    return "".join(c if is_gsm7(c) else _unaccented(c) for c in swapped)


@cache
def _unaccented(letter: str) -> str:
    """A Latin letter that GSM-7 lacks, without its accent when GSM-7 has that ("á" → "a");
    else the letter itself ("ł" has no plain form)."""
    if not unicodedata.name(letter, "").startswith("LATIN"):
        return letter
    plain = "".join(
        c for c in unicodedata.normalize("NFKD", letter) if not unicodedata.combining(c)
    )
    return plain if plain and is_gsm7(plain) else letter


def fit(text: str, link: str, *, max_segments: int) -> str:
    """`text link`, with text cut at a word boundary (and an ellipsis) so that the whole fits in
    max_segments; the link is never cut. The text is made GSM-7 (as_gsm7) when that makes the
    SMS GSM-7: the whole of it, or the part that fits."""
    if is_gsm7(link):
        text = as_gsm7(text)
    whole = f"{text} {link}" if link else text
    if segments(whole) <= max_segments:
        return whole
    gsm = is_gsm7(whole)
    shown = _cut_to(text, link, max_segments=max_segments, gsm=gsm)
    if is_gsm7(link) and not gsm:
        # A long English text whose first UCS-2 letter comes late ("Łódź" far down): what
        # comes before it, as GSM-7, may show more than twice as much.
        swapped = _gsm_form(text)
        head = swapped[: next(i for i, c in enumerate(swapped) if not is_gsm7(c))]
        head = head[: head.rfind(" ") + 1].rstrip()  # the letter's word goes too
        shown_gsm = _cut_to(head, link, max_segments=max_segments, gsm=True)
        if len(shown_gsm) > len(shown):
            return _with_mark(shown_gsm, link, gsm=True)
    return _with_mark(shown, link, gsm=gsm)


def _cut_to(text: str, link: str, *, max_segments: int, gsm: bool) -> str:
    """The text cut to leave room for the mark and the link."""
    room = capacity(max_segments, gsm=gsm) - units(_with_mark("", link, gsm=gsm), gsm=gsm)
    return _cut_at_word(text, room, gsm=gsm)


def _with_mark(cut: str, link: str, *, gsm: bool) -> str:
    # The ellipsis is UCS-2, so a cut message is measured as UCS-2 unless GSM-7 "..." is used.
    mark = "..." if gsm else ELLIPSIS
    return f"{cut}{mark} {link}" if link else f"{cut}{mark}"


def _cut_at_word(text: str, room: int, *, gsm: bool) -> str:
    if room <= 0:
        return ""
    end, used = 0, 0
    for i, c in enumerate(text):
        used += units(c, gsm=gsm)
        if used > room:
            break
        end = i + 1
    head = text[:end]
    if end < len(text) and not text[end].isspace():
        # Back off to the last space, unless that would throw away most of the text.
        space = max(head.rfind(" "), head.rfind("\n"))
        if space > len(head) // 2:
            head = head[:space]
    return re.sub(r"[\s.,;:]+$", "", head)
