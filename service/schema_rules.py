"""JSON schema statements of rules our validators check, so the OpenAPI description says them
too: fields that take no null, "at least one of" several fields, what a name may hold. Used as
pydantic's json_schema_extra; they change what the schema says, never what is accepted. A name
is checked by the very pattern the schema states (check_name), so the two cannot drift."""

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, model_validator

JsonSchema = dict[str, Any]

# No body object of ours has more fields than this. One with more cannot be valid, and naming
# each unknown key was 104,000 errors for a 1 MB body (0.25 s of pydantic's and FastAPI's
# error objects, for anyone, before any limit): it is one error instead.
MOST_FIELDS = 50


class StrictModel(BaseModel):
    """A body object: unknown fields refused, strings stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _not_too_many_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) > MOST_FIELDS:
            raise ValueError(f"{len(data)} fields: an object here has at most {MOST_FIELDS}")
        return data


# Refused anywhere in a name: C0 and C1 controls and DEL, the line and paragraph separators, and
# the bidi controls (embeddings, overrides, isolates, marks: U+202A-U+202E, U+2066-U+2069,
# U+200E, U+200F, U+061C), with which a name displays as another ("Kim" + RLO + "evil").
# DISPLAYS_AS_OTHER (all but the C0 controls) is also left out of a check-in note.
DISPLAYS_AS_OTHER = r"\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_NAME_REFUSED = r"\x00-\x1f" + DISPLAYS_AS_OTHER
# Taken out of free text we show to others (a check-in note, a feed's words in an SMS): what
# displays as something else, and the C0 controls but tab and newline.
UNSHOWN = re.compile(rf"[\x00-\x08\x0b-\x1f{DISPLAYS_AS_OTHER}]")
_BIDI = re.compile(r"[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Allowed in a name, never all of it: what draws nothing (soft hyphen, grapheme joiner, Hangul
# and Khmer fillers, Mongolian selectors, zero-width space, ZWNJ and ZWJ (Persian and Indic
# names need these two inside), word joiner, invisible operators, braille blank, variation
# selectors, BOM).
_INVISIBLE = (
    r"\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200d\u2060-\u2064"
    r"\u206a-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0"
)

# What draws nothing, anywhere in a text: left out where two names are compared as read.
INVISIBLE = re.compile(f"[{_INVISIBLE}]")

# Patterns for text that is stripped before its length is checked (so it needs a non-space):
# a name holds nothing refused above and at least one character that draws something; free
# text may have line breaks, never a NUL.
NAME_PATTERN = rf"^[^{_NAME_REFUSED}]*[^\s{_NAME_REFUSED}{_INVISIBLE}][^{_NAME_REFUSED}]*$"
TEXT_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"
# Free text of three characters or more once trimmed (two that are not spaces, one between).
TEXT3_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]+[^\s\x00][^\x00]*$"
_REWRITES = r"\x00-\x08\x0b-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069"
# A reason kept for others to read: nothing that rewrites its display (refuse_unshown).
REASON_PATTERN = rf"^[^{_REWRITES}]*[^\s{_REWRITES}][^{_REWRITES}]*$"
REASON3_PATTERN = (
    rf"^[^{_REWRITES}]*[^\s{_REWRITES}][^{_REWRITES}]+[^\s{_REWRITES}][^{_REWRITES}]*$"
)

_NAME = re.compile(NAME_PATTERN)
_NAME_REFUSED_CHAR = re.compile(f"[{_NAME_REFUSED}]")


def refuse_nul(text: str) -> str:
    """PostgreSQL stores no NUL in text or JSON, nor compares with one: refused here as bad
    input (a pydantic AfterValidator), not failed on in the database (a 500)."""
    if "\x00" in text:
        raise ValueError("NUL (0x00) characters are not allowed")
    return text


# What rewrites how the text around it displays: the C0 controls but tab and newline, C1,
# the line separators, and the bidi embeddings, overrides and isolates (not the marks, which
# pasted Arabic and Hebrew text carries).
REWRITES_DISPLAY = re.compile(f"[{_REWRITES}]")


def refuse_unshown(text: str) -> str:
    """Free text kept for others to read (an audit log's reason, a rejection): refused when it
    holds what rewrites its display (REWRITES_DISPLAY; a Windows line break is read as one).
    A probe's reason "ok ESC[31m CR approved by admin RLO" was kept for good, and read in a
    terminal it erased and rewrote its own line."""
    text = text.replace("\r\n", "\n")
    found = REWRITES_DISPLAY.search(text)
    if found:
        raise ValueError(
            f"control or bidirectional character U+{ord(found[0]):04X} is not allowed: it makes "
            "the text display as something else"
        )
    return text


def check_name(value: str) -> str:
    """A person's or a key's name as NAME_PATTERN states it (a pydantic validator): raises
    ValueError saying what is wrong."""
    if _BIDI.search(value):
        raise ValueError(
            "bidirectional control characters (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, "
            "U+061C) are not allowed: they make a name display as another"
        )
    if _NAME_REFUSED_CHAR.search(value):
        raise ValueError("control characters are not allowed")
    if not _NAME.fullmatch(value):
        raise ValueError("a name needs at least one visible character")
    return value


def not_null(field: JsonSchema) -> JsonSchema:
    """An optional field's schema without its null (and without the null default)."""
    kept = {k: v for k, v in field.items() if k not in ("anyOf", "default")}
    options = [o for o in field.get("anyOf", [field]) if o.get("type") != "null"]
    return {**kept, **(options[0] if len(options) == 1 else {"anyOf": options})}


def nulls_refused(*names: str, examples: list[Any] | None = None) -> Callable[[JsonSchema], None]:
    """Optional fields that may be left out but not sent as null."""

    def extra(schema: JsonSchema) -> None:
        for name in names:
            schema["properties"][name] = not_null(schema["properties"][name])
        if examples:
            schema["examples"] = examples

    return extra


def given(names: tuple[str, ...], kind: JsonSchema) -> list[JsonSchema]:
    """anyOf branches for "at least one of `names`, each of `kind` when given"."""
    return [{"required": [n], "properties": {n: kind}} for n in names]


def _within_utc(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError:  # "9999-12-31T23:59:59-12:00" is in year 10000 in UTC
        raise ValueError("out of range once read in UTC (years 1 to 9999)") from None
    return value


# Stored and compared in UTC: a time that leaves the calendar there is bad input (was a 500).
UtcTime = Annotated[AwareDatetime, AfterValidator(_within_utc)]
