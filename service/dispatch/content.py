"""What an alert says: one advisory revision, in words, per language."""

import gettext
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from functools import cache, cached_property

import pycountry

from service.advisories.levels import LEVEL_NAMES, asks_checkin, goes_at_once
from service.geo.areas import Area, area_from_json

LANGUAGES = ("ko", "en")
_LEVEL_FORMAT = {"ko": "여행경보 {}단계({})", "en": "Level {} ({})"}
EXERCISE_MARK = {"ko": "[훈련]", "en": "[EXERCISE]"}


@dataclass(frozen=True)
class AlertContent:
    advisory_public_id: str
    revision: int
    kind: str  # "new" | "update" | "cancel"
    level: str
    title: dict[str, str]
    message: dict[str, str]
    area: dict
    source: str  # the feed an advisory came from; "" for staff-issued ones
    expires: datetime | None
    # CAP's <severity> and <urgency> of a feed alert ("" otherwise): Extreme asks for a
    # check-in and Immediate ignores quiet hours, whatever level the feed's table gave it.
    severity: str = ""
    urgency: str = ""
    # A drill: every message of it starts with EXERCISE_MARK, so nobody takes it for real.
    exercise: bool = False

    @property
    def asks_checkin(self) -> bool:
        """Whether this alert asks "are you safe?" (never an all-clear)."""
        return self.kind != "cancel" and asks_checkin(self.level, severity=self.severity)

    @property
    def goes_at_once(self) -> bool:
        """Whether this alert ignores the citizen's quiet hours (an all-clear of an urgent
        advisory too: people act on it)."""
        return goes_at_once(self.level, severity=self.severity, urgency=self.urgency)

    @cached_property
    def shapes(self) -> Area:
        """The area as matched, rebuilt once per revision (ContentCache keeps the content)."""
        return area_from_json(self.area)

    def language_for(self, wanted: str) -> str:
        """The language of the message's frame (sender, level, area, how to answer, links):
        the citizen's, whatever the advisory was written in. An advisory written in one
        language only gives its title and text in that one (`text` falls back), but an English
        reader must still read how to answer "are you safe?"."""
        if wanted in LANGUAGES:
            return wanted
        return next((lang for lang in LANGUAGES if self.title.get(lang)), LANGUAGES[0])

    def level_name(self, lang: str) -> str:
        name = LEVEL_NAMES[self.level][0 if lang == "ko" else 1]
        if self.level == "special":
            return name
        return _LEVEL_FORMAT[lang].format(self.level, name)

    def text(self, field: dict[str, str], lang: str) -> str:
        return field.get(lang) or next((field[o] for o in LANGUAGES if field.get(o)), "")


def area_text(area: dict, lang: str) -> str:
    """A short description of an advisory's area, for people rather than GIS: the feed's words
    in the reader's language when it gave them. An English reader never gets Korean (or other
    non-Latin) words for it, but names made from the shapes: a MOFA row names its area only in
    Korean, and one Hangul letter also makes an English SMS cost 70 characters a segment."""
    words = str(
        (area.get("description_ko") if lang == "ko" else "") or area.get("description") or ""
    )
    if words and (lang == "ko" or not has_non_latin_letters(words)):
        return words
    return _shape_names(area, lang) or words


def has_non_latin_letters(words: str) -> bool:
    """Whether the text has letters of a script other than Latin ("Hà Nội" and "Oʻahu" are
    Latin: the ʻokina is a modifier letter)."""
    return any(
        ch.isalpha() and not unicodedata.name(ch, "").startswith(("LATIN", "MODIFIER LETTER"))
        for ch in words
    )


def _shape_names(area: dict, lang: str) -> str:
    parts = [country_name(code, lang) for code in area.get("countries") or ()]
    parts += list(area.get("subdivisions") or ())
    for circle in area.get("circles") or ():
        radius = f"{circle['radius_km']:g} km"
        where = f"{circle['lat']:.2f}, {circle['lon']:.2f}"
        parts.append(f"{where} 반경 {radius}" if lang == "ko" else f"{radius} around {where}")
    if area.get("geometry"):
        parts.append("지정 구역" if lang == "ko" else "the marked area")
    if len(parts) > 4:
        more = len(parts) - 3
        parts = [*parts[:3], f"외 {more}곳" if lang == "ko" else f"{more} more"]
    return ", ".join(parts)


def country_name(code: str, lang: str) -> str:
    country = pycountry.countries.get(alpha_2=code)
    if country is None:
        return code
    name = getattr(country, "common_name", None) or country.name
    return _korean_names().gettext(name) if lang == "ko" else name


@cache
def _korean_names() -> gettext.NullTranslations:
    return gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=["ko"], fallback=True)
